"""Output paths (arca.paths): the layout, and that each path is named once.

The Snakemake rules' outputs (through ``arca.grid``) and the files the steps write both come from
``arca.paths``: a dry run of the smoke DAG must declare exactly the paths that module gives, the
rules that pass ``--out`` must pass the declared output, and no step module may spell one of the
layout's file names itself.
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

from arca import grid
from arca.config import load_config
from arca.paths import PRETRAIN_LOSS, Paths, RunPaths, paths_of

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "arca"
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = str(VENV_BIN / "snakemake") if (VENV_BIN / "snakemake").exists() else shutil.which("snakemake")
# The steps that write results (and grid, which declares them): none may spell a file name of the layout.
STEP_MODULES = ("grid", "train", "run_files", "evaluate", "probe", "analysis", "smoke", "pretrain")


def test_layout():
    cfg = load_config(REPO / "configs" / "default.yaml", ["paths.results=/r"])
    p = paths_of(cfg)
    assert p.root == cfg.out_dir == Path("/r/default")
    assert (p.data.train, p.data.test, p.data.math500) == tuple(
        Path("/r/default/data", f) for f in ("train.jsonl", "test.jsonl", "math500.jsonl")
    )
    assert p.base == cfg.base_dir == Path("/r/default/base")
    run = p.run("arca_r2_s1")
    assert run.root == cfg.run_dir("arca_r2_s1")
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
    assert ev.root == cfg.eval_dir("base")
    assert p.probe_rollouts == Path("/r/default/eval/probe_rollouts.jsonl")
    assert p.heatmap_rollouts == Path("/r/default/analysis/heatmap_rollouts.jsonl")
    assert p.table("cost", "md") == Path("/r/default/tables/cost.md")
    assert p.heatmap == Path("/r/default/figures/credit_heatmap.html")
    assert p.log("train", "{run}") == Path("/r/default/logs/train/{run}.log")
    assert p.benchmark("build_base") == Path("/r/default/benchmarks/build_base/build_base.tsv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.root = Path("/elsewhere")  # type: ignore[misc]


def test_grid_takes_every_path_from_paths():
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    p = paths_of(cfg)
    for run in cfg.run_ids():
        assert grid.train_outputs(cfg, run) == {k: str(v) for k, v in p.run(run).declared().items()}
    for target in grid.eval_targets(cfg):
        assert grid.eval_outputs(cfg, target) == {k: str(v) for k, v in p.eval(target).declared().items()}
    assert grid.data_outputs(cfg) == {"train": str(p.data.train), "test": str(p.data.test)}
    assert grid.base_output(cfg) == str(p.base)
    assert grid.probe_output(cfg) == str(p.probe_rollouts)
    assert grid.heatmap_rollouts_output(cfg) == str(p.heatmap_rollouts)
    assert grid.heatmap_output(cfg) == str(p.heatmap)
    # a wildcard works as a run id: the rule's pattern
    assert grid.train_outputs(cfg)["metrics"] == str(RunPaths(cfg.out_dir / "runs" / "{run}").metrics)


def _layout_file_names() -> set[str]:
    """Every file name the layout defines (``metrics.jsonl``, ``summary.json``, ...)."""
    p = Paths(Path("R"))
    run, ev = p.run("x"), p.eval("x")
    paths = [p.data.train, p.data.test, p.data.math500, p.probe_rollouts, p.heatmap_rollouts, p.heatmap]
    paths += [run.metrics, run.final_weights, run.curve, run.config, ev.summary, ev.samples]
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
        "evaluate": {f for t in grid.eval_targets(cfg) for f in p.eval(t).declared().values()},
        "probe_rollouts": {p.probe_rollouts},
        "mc_values": {p.mc_values, p.mc_summary},
        "heatmap_rollouts": {p.heatmap_rollouts},
        "aggregate": {p.table(n, e) for n, exts in grid.TABLES.items() for e in exts},
        "figures": {p.figure(n, e) for n in grid.FIGURES for e in grid.FIGURE_FORMATS},
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
        "mc-values": str(p.mc_values),
        "heatmap-rollouts": str(p.heatmap_rollouts),
    }
