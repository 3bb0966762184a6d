"""The real Snakemake DAG of the smoke config, end to end (no stand-ins), and resume under Snakemake.

Marked slow (a couple of minutes on 2 cores) but part of the suite CI runs.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import psutil
import pytest
import yaml

from arca.credit import REGISTRY

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def snakemake(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "snakemake"), *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def overlay(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({"paths": {"results": str(tmp_path / "results")}, **extra}))
    return path


@pytest.mark.slow
def test_smoke_dag_end_to_end(smoke_dag):
    args, out = smoke_dag.args, smoke_dag.out  # the session's one local run (tests/conftest.py)
    for name in ("performance", "concentration"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    for fig in ("gini_bars", "concentration_curves", "reward_curves", "accuracy", "lorenz", "accuracy_vs_params",
                "credit_precision", "learning_curves"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
        assert (out / "figures" / f"{fig}.pdf").stat().st_size > 1000
    with open(out / "tables" / "performance.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} >= {"base", "uniform", "surprisal", "entropy_reduction", "divergence", "arca", "oracle"}
    # the smoke corpus has planted forks: the new tables exist and every run has a learning curve
    for name in ("credit_precision.csv", "credit_precision.md", "sample_efficiency.csv", "learning_curves.csv"):
        assert (out / "tables" / name).stat().st_size > 0
    with open(out / "tables" / "learning_curves.csv") as f:
        steps = sorted({int(r["step"]) for r in csv.DictReader(f)})
    assert steps == [0, 2, 4]  # eval.every: 2 over 4 steps
    probe = [json.loads(x) for x in (out / "eval" / "probe_rollouts.jsonl").read_text().splitlines()]
    assert len(probe) == 4 * 4  # eval.probe_problems x rollout.k

    # the heat map holds one row per registered method for each rollout
    class Rows(HTMLParser):
        methods: list[str] = []

        def handle_starttag(self, tag, attrs):
            d = dict(attrs)
            if d.get("data-method"):
                self.methods.append(d["data-method"])

    parser = Rows()
    parser.feed((out / "figures" / "credit_heatmap.html").read_text())
    assert set(parser.methods) == set(REGISTRY)

    summary = json.loads((out / "eval" / "base" / "summary.json").read_text())
    assert summary["protocols"]["generated"]["n_problems"] == 10

    again = snakemake(*args, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    report = snakemake(*args, "--report", str(out / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "report.html").stat().st_size > 10_000


def _train_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "arca" in cmd and " train " in f" {cmd} " and marker in cmd:
            found.append(p)
    return found


@pytest.mark.slow
def test_killed_training_job_resumes_under_snakemake(tmp_path):
    ov = overlay(tmp_path, train={"steps": 16, "checkpoint_every": 2})
    run_dir = tmp_path / "results" / "smoke" / "runs" / "uniform_r4_s1"
    target = str(run_dir / "adapter")
    args = ["--cores", "1", target, "--configfile", "configs/smoke.yaml", str(ov)]  # targets before the nargs option
    sm = subprocess.Popen([str(VENV_BIN / "snakemake"), *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and not any((run_dir / "checkpoints").glob("step_*")):
        assert sm.poll() is None, sm.stdout.read()
        time.sleep(0.02)
    victims = _train_processes(str(ov))
    assert victims, "the training job was not found"
    for p in victims:
        os.kill(p.pid, signal.SIGKILL)  # the job dies as if preempted; Snakemake sees a failure
    sm.wait(timeout=120)
    assert sm.returncode != 0
    assert not (run_dir / "adapter").exists()
    assert any((run_dir / "checkpoints").glob("step_*"))

    proc = snakemake(*args)  # the same command again
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "results" / "smoke" / "logs" / "train" / "uniform_r4_s1.log").read_text()
    assert "resuming from" in log
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 17))
