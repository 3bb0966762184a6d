"""Generated regions of README.md and docs/*.md, rewritten from results/reference/ (files only).

A region is ``<!-- BEGIN arca:NAME -->`` ... ``<!-- END arca:NAME -->``, each marker on a line
of its own. NAME is ``<config>/<table>`` (``results/reference/<config>/<table>.md`` without its
title line), ``<config>/findings`` (each cell's claims, read off the reference's tables) or
``<config>/leaderboard`` (one row per method, ``arca.report.leaderboard``).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path

from arca.config import MissingInputError
from arca.report.leaderboard import leaderboard_region, leaderboard_top

log = logging.getLogger("arca")

REGION = re.compile(
    r"^(<!-- BEGIN arca:(?P<name>[\w./-]+) -->\n)(?P<body>.*?)^(<!-- END arca:(?P=name) -->)$",
    flags=re.S | re.M,
)
OPEN = re.compile(r"^<!-- BEGIN arca:([\w./-]+) -->$", flags=re.M)
REFERENCE = Path("results") / "reference"
_WORDS = {"positive": "higher", "negative": "lower", "no detectable difference": "not detectably different"}
_SHORT = {"area under the greedy learning curve": "learning-curve area"}


class DocsOutOfDate(Exception):
    """``docs --check`` found a region that differs from what ``docs`` would write."""

    exit_status = 1


def doc_files(root: Path) -> list[Path]:
    """README.md and every docs/*.md under ``root`` that exist, in a fixed order."""
    files = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
    return [f for f in files if f.is_file()]


def _table(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").strip("\n").splitlines()
    while lines and lines[0].startswith("# "):  # the file's own title; the doc has its heading
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    # the table's own sections sit below the doc's heading (a ### section) for it
    return "\n".join(f"##{line}" if line.startswith("#") else line for line in lines)


def findings(folder: Path) -> str:
    """One line per (cell, what it is compared with): each claim the reference's own tables make, with its number."""
    from arca.report.reference import reference_verdict

    verdict = reference_verdict(folder, folder)
    pairs: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
    other_claims = []  # claims that are not a paired difference, e.g. an ordering of Gini by rank
    for c in verdict.claims:
        head, word = c.claim.rsplit(": ", 1)
        if ", " not in head or " minus " not in head.split(", ", 1)[0]:
            other_claims.append(f"- {head}: {word}")
            continue
        pair, quantity = head.split(", ", 1)
        cell, other = pair.split(" minus ", 1)
        quantity = quantity.split(" (", 1)[0]
        quantity = _SHORT.get(quantity, quantity)
        pairs.setdefault((cell, other.replace("_r", " r")), []).append(
            f"{quantity} {_WORDS.get(word, word)} ({c.reference})"
        )
    lines = [f"- **{cell}** vs {other}: " + "; ".join(parts) for (cell, other), parts in pairs.items()]
    return "\n".join(lines + other_claims)


def render_region(name: str, root: Path) -> str:
    """What the region ``name`` holds, without its markers."""
    config, _, what = name.partition("/")
    folder = root / REFERENCE / config
    if what == "leaderboard":  # one row per method from the reference's CSV tables (arca.report.leaderboard)
        return leaderboard_region(folder, shown=(REFERENCE / config).as_posix())
    if what == "top":  # the README's excerpt of the leaderboard: its best cells by learning-curve area
        return leaderboard_top(folder)
    if not what or not folder.is_dir():
        raise MissingInputError(f"arca:{name}: expected <config>/<table> with a folder {folder}")
    if what == "findings":
        return findings(folder)
    path = folder / f"{what}.md"
    if not path.is_file():
        tables = ", ".join(sorted(p.stem for p in folder.glob("*.md")))
        raise MissingInputError(f"arca:{name}: no {path} (tables there: {tables})")
    return _table(path)


def rewrite(text: str, root: Path, source: str = "") -> str:
    """``text`` with every region's body replaced by ``render_region``; unclosed regions are errors."""
    opened = OPEN.findall(text)
    closed = [m.group("name") for m in REGION.finditer(text)]
    if sorted(opened) != sorted(closed):
        missing = sorted(set(opened) - set(closed)) or opened
        raise ValueError(f"{source}: region arca:{missing[0]} has no matching <!-- END arca:{missing[0]} -->")

    def body(m: re.Match) -> str:
        return f"{m.group(1)}{render_region(m.group('name'), root)}\n{m.group(4)}"

    return REGION.sub(body, text)


def update_docs(root: Path, check: bool = False) -> list[Path]:
    """Rewrite the regions of every doc file; return the files that changed (or would, with ``check``)."""
    changed = []
    for path in doc_files(root):
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, root, str(path))
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return changed


def docs_main(cfg, args) -> None:
    root = Path(args.root)
    changed = update_docs(root, check=args.check)
    names = ", ".join(str(p.relative_to(root)) for p in changed)
    if args.check and changed:
        raise DocsOutOfDate(f"generated regions out of date in {names}; run python -m arca docs")
    log.info("%s", f"rewrote {names}" if changed else "every generated region is up to date")
