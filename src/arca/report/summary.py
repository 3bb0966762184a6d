"""What a successful run of the DAG prints at its end: the main table, the claims, the report's path."""

from __future__ import annotations

from pathlib import Path

from arca.config import Config
from arca.paths import paths_of

CLAIMS_HEADING = "## The paper's claims"


def _claims(comparison: Path) -> str:
    """The claims section of ``paper_comparison.md`` (up to the next section)."""
    if not comparison.is_file():
        return ""
    text = comparison.read_text(encoding="utf-8")
    start = text.find(CLAIMS_HEADING)
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)].strip()


def run_summary(cfg: Config, report: Path | None) -> str:
    """The main table, the claims (the paper's, judged at this scale, and the reference's when
    ``compare-reference`` has run), and where the report and the tables are."""
    out = paths_of(cfg)
    parts = [f"Results of '{cfg.name}' in {out.root}/", ""]
    table = out.table("performance", "md")
    if table.is_file():
        parts += [f"Held-out accuracy ({table}):", "", table.read_text(encoding="utf-8").strip(), ""]
    claims = _claims(out.table("paper_comparison", "md"))
    if claims:
        parts += [claims, "", f"(the paper's numbers beside ours: {out.table('paper_comparison', 'md')})", ""]
    reference = out.reference_claims
    if reference.is_file():
        parts += [f"Claims of the committed reference checked on this run: {reference}", ""]
    else:
        parts += [f"Check this run against the committed reference: python -m arca compare-reference {_cfg_hint(cfg)}"]
        parts += [""]
    if report is not None and report.is_file():
        parts.append(f"Report with every table, figure and the claims: {report}")
    else:
        parts.append(f"Report: snakemake --report {out.report} (with the same --configfile)")
    return "\n".join(parts) + "\n"


def _cfg_hint(cfg: Config) -> str:
    return (
        f"--config configs/{cfg.name}.yaml"
        if Path("configs", f"{cfg.name}.yaml").is_file()
        else "--config <your files>"
    )
