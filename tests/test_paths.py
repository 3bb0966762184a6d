"""Output paths (arca.paths): the layout, and that each path is named once.

The Snakemake rules name their files through ``arca.paths`` (``P = paths_of(CFG)``), and the steps
and the report take the files they write and read from it: a dry run of the smoke DAG must declare
exactly the paths that module gives, the rules that pass ``--out`` must pass the declared output,
and no step or report module may spell one of the layout's file names itself.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arca.config import BASE, load_config
from arca.paths import FIGURE_FORMATS, FIGURES, PRETRAIN_LOSS, TABLES, Paths, RunPaths, paths_of

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "arca"
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = str(VENV_BIN / "snakemake") if (VENV_BIN / "snakemake").exists() else shutil.which("snakemake")
# The steps that write results, the report that reads them and the Snakemake adapter: none may
# spell a file name of the layout.
STEP_MODULES = ("snakerules", "train", "run_files", "evaluate", "probe", "heatmap_rollouts", "smoke", "pretrain")
REPORT_MODULES = tuple(sorted(f"report/{p.stem}" for p in (SRC / "report").glob("*.py")))


def test_layout():
    cfg = load_config(REPO / "configs" / "default.yaml", ["paths.results=/r"])
    p = paths_of(cfg)
    assert p.root == Path("/r/default")
    assert (p.data.train, p.data.test, p.data.math500) == tuple(
        Path("/r/default/data", f) for f in ("train.jsonl", "test.jsonl", "math500.jsonl")
    )
    assert p.base == Path("/r/default/base")
    run = p.run("arca_r2_s1")
    assert run.root == Path("/r/default/runs/arca_r2_s1")
    assert {k: str(v.relative_to(run.root)) for k, v in run.declared().items()} == {
        "adapter": "adapter",
        "metrics": "metrics.jsonl",
        "final_weights": "final_weights.json",
        "curve": "curve.jsonl",
    }
    assert run.checkpoint(12) == run.root / "checkpoints" / "step_000012"
    assert (run.live_metrics, run.live_curve) == (
        run.root / "live" / "metrics.jsonl",
        run.root / "live" / "curve.jsonl",
    )
    # nothing that must survive a failed job is a declared output
    assert not {run.config, run.checkpoints, run.live, run.tensorboard} & set(run.declared().values())
    ev = p.eval("base")
    assert (ev.summary, ev.samples) == (
        Path("/r/default/eval/base/summary.json"),
        Path("/r/default/eval/base/samples.jsonl"),
    )
    assert p.probe_rollouts == Path("/r/default/eval/probe_rollouts.jsonl")
    assert p.heatmap_rollouts == Path("/r/default/analysis/heatmap_rollouts.jsonl")
    assert p.table("cost", "md") == Path("/r/default/tables/cost.md")
    assert p.heatmap == Path("/r/default/figures/credit_heatmap.html")
    assert p.log("train", "{run}") == Path("/r/default/logs/train/{run}.log")
    assert p.benchmark("build_base") == Path("/r/default/benchmarks/build_base/build_base.tsv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.root = Path("/elsewhere")  # type: ignore[misc]


RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]


def _rule_sections(text: str, section: str) -> list[str]:
    """The body of every ``<section>:`` of the rules in a Snakemake file, one string per rule."""
    bodies, body, inside = [], [], False
    for line in text.splitlines():
        if line.startswith("    ") and not line.startswith("        "):  # a rule's keyword line
            if inside:
                bodies.append("\n".join(body))
            inside, body = line.strip() == f"{section}:", []
        elif inside and line.startswith("        "):
            body.append(line.strip())
    if inside:
        bodies.append("\n".join(body))
    return bodies


@pytest.mark.parametrize("section", ["output", "log", "benchmark"])
def test_rules_name_their_files_through_paths(section):
    """Every rule shows its files as ``P.<name>`` (``P = paths_of(CFG)``): no literal path, and no
    output hidden in a helper; only the report's captions wrap ``P``'s table and figure files."""
    bodies = [b for f in RULE_FILES for b in _rule_sections(f.read_text(encoding="utf-8"), section)]
    assert len(bodies) >= 4
    for body in bodies:
        assert "P." in body, body
        literals = re.findall(r"[\"']([^\"']*/[^\"']*)[\"']", body)
        # the report's captions (../report/...) are the only strings with a slash
        assert all(x.startswith("../report") for x in literals), f"a literal path in a rule's {section}: {body}"
        helpers = set(re.findall(r"snakerules\.(\w+)", body))
        assert helpers <= {"report_outputs"}, f"a rule's {section} comes from {helpers}: name it through P"


def test_the_rule_reader_finds_sections():
    text = "rule a:\n    input:\n        x=P.base,\n    output:\n        P.heatmap,\n    log:\n        P.log('a'),\n"
    assert _rule_sections(text, "output") == ["P.heatmap,"] and _rule_sections(text, "input") == ["x=P.base,"]


def test_run_patterns_hold_wildcards():
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    assert paths_of(cfg).run("{run}").metrics == RunPaths(paths_of(cfg).root / "runs" / "{run}").metrics
    assert str(paths_of(cfg).eval("{target}").summary).endswith("eval/{target}/summary.json")


def _layout_file_names() -> set[str]:
    """Every file name the layout defines (``metrics.jsonl``, ``summary.json``, ...)."""
    p = Paths(Path("R"))
    run, ev = p.run("x"), p.eval("x")
    paths = [p.data.train, p.data.test, p.data.math500, p.probe_rollouts, p.heatmap_rollouts, p.heatmap]
    paths += [run.metrics, run.final_weights, run.curve, run.config, ev.summary, ev.samples]
    paths += [*p.table_files().values(), *p.figure_files().values(), p.mc_values, p.mc_summary]
    return {q.name for q in paths} | {PRETRAIN_LOSS}


def _string_constants(path: Path) -> set[str]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    }


def _joined_names(path: Path) -> set[str]:
    """String literals a module builds a path with: ``x / "name"`` or a literal holding a slash."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    joined = {
        n.right.value
        for n in ast.walk(tree)
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.right, ast.Constant)
    }
    return {s for s in joined if isinstance(s, str)} | {s for s in _string_constants(path) if "/" in s}


@pytest.mark.parametrize("module", REPORT_MODULES)
def test_report_builds_no_path_of_the_layout(module):
    """The report reads and writes the layout's files through ``arca.paths`` (its messages may name them)."""
    names = _layout_file_names()
    spelled = {s for s in _joined_names(SRC / f"{module}.py") if any(s == n or s.endswith("/" + n) for n in names)}
    assert not spelled, f"arca.{module} builds output paths itself (take them from arca.paths): {sorted(spelled)}"


def test_the_path_checker_sees_a_join(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('def f(d):\n    print("no runs.csv")\n    return d / "runs.csv", "tables/curves.csv"\n')
    assert _joined_names(f) == {"runs.csv", "tables/curves.csv"}


@pytest.mark.parametrize("module", STEP_MODULES)
def test_steps_spell_no_output_file_name(module):
    names = _layout_file_names()
    assert "metrics.jsonl" in names and "summary.json" in names
    spelled = {s for s in _string_constants(SRC / f"{module}.py") if any(name in s for name in names)}
    assert not spelled, f"arca.{module} names output files itself (take them from arca.paths): {sorted(spelled)}"


def test_the_checker_sees_a_literal_name(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        '"""Writes metrics.jsonl."""\n\ndef f(d):\n    """Doc: summary.json."""\n    return d / "curve.jsonl"\n'
    )
    assert _string_constants(f) == {"curve.jsonl"}


def _dry_run_jobs(log: str) -> list[tuple[str, list[str]]]:
    """``(rule, outputs)`` of every job of a dry run's plan."""
    jobs, rule = [], None
    for line in log.splitlines():
        m = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m[1]
        elif rule and line.strip().startswith("output: "):
            jobs.append((rule, line.strip()[len("output: ") :].split(", ")))
            rule = None
    return jobs


@pytest.mark.slow
def test_rule_outputs_are_the_paths_the_steps_write(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(f"paths:\n  results: {tmp_path / 'results'}\n")
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "-p", "--nolock", "--configfile", "configs/smoke.yaml", str(overlay)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    cfg = load_config([REPO / "configs" / "smoke.yaml", overlay])
    p = paths_of(cfg)
    declared: dict[str, set[str]] = {}
    for rule, outputs in _dry_run_jobs(log):
        declared.setdefault(rule, set()).update(outputs)
    expected = {
        "prepare_data": {p.data.train, p.data.test},
        "build_base": {p.base},
        "train": {f for r in cfg.run_ids() for f in p.run(r).declared().values()},
        "evaluate": {f for t in cfg.run_ids() for f in p.eval(t).declared().values()},
        "evaluate_base": set(p.eval(BASE).declared().values()),
        "probe_rollouts": {p.probe_rollouts},
        "curve_start": {p.curve_start},
        "mc_values": {p.mc_values, p.mc_summary},
        "heatmap_rollouts": {p.heatmap_rollouts},
        "aggregate": {p.table(n, e) for n, exts in TABLES.items() for e in exts},
        "figures": {p.figure(n, e) for n in FIGURES for e in FIGURE_FORMATS},
        "heatmap": {p.heatmap},
    }
    assert declared == {rule: {str(f) for f in files} for rule, files in expected.items()}
    # a step told where to write (--out) is told the declared output
    outs = {}
    for line in log.splitlines():
        if line.startswith("Shell command: python -m arca") and " --out " in line:
            cmd = shlex.split(line[len("Shell command: ") :].split(" > ")[0])
            outs[cmd[3]] = cmd[cmd.index("--out") + 1]
    assert outs == {
        "probe-rollouts": str(p.probe_rollouts),
        "curve-start": str(p.curve_start),
        "mc-values": str(p.mc_values),
        "heatmap-rollouts": str(p.heatmap_rollouts),
    }
