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
from helpers import REPO, VENV_BIN, snakemake_env

from arca.credit import MC_VALUES, REGISTRY
from arca.paths import FIGURES

ENV = snakemake_env()
# The x86 kernel choices results/reference/smoke/ was made with (docs/reproducibility.md):
# torch's AVX2 kernels and MKL's AVX2 code path exist on every x86-64 CPU of the last decade, so the
# smoke DAG computes the same bits on each of them, and its tables can be checked number by number.
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def snakemake(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "snakemake"), *args], cwd=REPO, env=env or ENV, capture_output=True, text=True, timeout=timeout
    )


def overlay(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({"paths": {"results": str(tmp_path / "results")}, **extra}))
    return path


@pytest.mark.slow
def test_smoke_dag_end_to_end(tmp_path):
    ov = overlay(tmp_path)
    args = ["--cores", "2", "--configfile", "configs/smoke.yaml", str(ov)]
    proc = snakemake(*args, env={**ENV, **PORTABLE_KERNELS})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "results" / "smoke"
    # the run ends in one place: the HTML report, and on the screen the main table, the claims and its path
    report = out / "report.html"
    assert report.stat().st_size > 10_000 and "paper_comparison.md" in report.read_text(errors="replace")
    screen = proc.stdout + proc.stderr
    assert (out / "tables" / "performance.md").read_text().strip() in screen
    assert "## The paper's claims, judged at this scale" in screen
    assert f"Report with every table, figure and the claims: {report}" in screen
    for name in ("performance", "concentration"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    for fig in FIGURES:
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
        assert (out / "figures" / f"{fig}.pdf").stat().st_size > 1000
    with open(out / "tables" / "performance.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} >= {
        "base",
        "uniform",
        "surprisal",
        "entropy_reduction",
        "divergence",
        "arca",
        "oracle",
    }
    # the smoke corpus has planted forks: the new tables exist and every run has a learning curve
    for name in ("credit_precision.csv", "credit_precision.md", "sample_efficiency.csv", "learning_curves.csv"):
        assert (out / "tables" / name).stat().st_size > 0
    with open(out / "tables" / "learning_curves.csv") as f:
        steps = sorted({int(r["step"]) for r in csv.DictReader(f)})
    assert steps == [0, 2, 4]  # eval.every: 2 over 4 steps
    probe = [json.loads(x) for x in (out / "eval" / "probe_rollouts.jsonl").read_text().splitlines()]
    assert len(probe) == 4 * 4  # eval.probe_problems x rollout.k

    # the heat map holds one row per registered method for each rollout, except the methods that
    # need rollouts of their own (Monte Carlo values), which it cannot score
    class Rows(HTMLParser):
        methods: list[str] = []

        def handle_starttag(self, tag, attrs):
            d = dict(attrs)
            if d.get("data-method"):
                self.methods.append(d["data-method"])

    parser = Rows()
    parser.feed((out / "figures" / "credit_heatmap.html").read_text())
    assert set(parser.methods) == {n for n, spec in REGISTRY.items() if MC_VALUES not in spec.needs}

    summary = json.loads((out / "eval" / "base" / "summary.json").read_text())
    assert summary["protocols"]["generated"]["n_problems"] == 10

    # the cost table: Snakemake's wall time and peak memory of the base build and every run's jobs
    with open(out / "tables" / "cost.csv") as f:
        cost = {r["run"]: r for r in csv.DictReader(f)}
    assert set(cost) == {"base", *(r["run"] for r in rows_of(out / "tables" / "runs.csv") if r["run"] != "base")}
    assert float(cost["base"]["build_base_s"]) > 0 and float(cost["base"]["evaluate_max_rss_mb"]) > 0
    for run, row in cost.items():
        if run != "base":
            assert float(row["train_s"]) > 0 and float(row["evaluate_s"]) > 0, row
            assert float(row["train_max_rss_mb"]) > 50, row  # a Python process with torch loaded

    again = snakemake(*args, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # every number of the tables equals the reference kept in the repository
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "arca",
            "compare-reference",
            "--config",
            "configs/smoke.yaml",
            "--config",
            str(ov),
            "--reference",
            str(REPO / "results" / "reference" / "smoke"),
            "--exact",
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert "matches the reference" in (out / "reference_comparison.md").read_text()

    report = snakemake(*args, "--report", str(out / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "report.html").stat().st_size > 10_000


def rows_of(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


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
    sm = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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


@pytest.mark.slow
def test_snakemake_killed_whole_then_unlock_then_resume(tmp_path):
    """kill -9 of Snakemake's whole process group (a lost node): its lock stays, the same command
    fails with LockException, `snakemake --unlock` clears it and the same command then resumes the
    killed training from its checkpoint."""
    import shutil

    # A copy of the workflow: the stale lock lives in <workdir>/.snakemake/, which must not be the repo's.
    wf = tmp_path / "wf"
    wf.mkdir()
    shutil.copy(REPO / "Snakefile", wf)
    shutil.copytree(REPO / "workflow", wf / "workflow")
    shutil.copytree(REPO / "configs", wf / "configs")
    ov = overlay(tmp_path, train={"steps": 16, "checkpoint_every": 2})
    run_dir = tmp_path / "results" / "smoke" / "runs" / "uniform_r4_s1"
    cmd = [
        str(VENV_BIN / "snakemake"),
        "--cores",
        "1",
        str(run_dir / "adapter"),
        "--configfile",
        "configs/smoke.yaml",
        str(ov),
    ]
    sm = subprocess.Popen(
        cmd, cwd=wf, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )  # its own process group, as a login shell or batch job has
    deadline = time.time() + 600
    while time.time() < deadline and not any((run_dir / "checkpoints").glob("step_*")):
        assert sm.poll() is None, sm.stdout.read()
        time.sleep(0.02)
    assert _train_processes(str(ov)), "the training job was not found"
    os.killpg(sm.pid, signal.SIGKILL)  # Snakemake and its jobs die at once: no clean-up runs
    sm.wait(timeout=60)
    deadline = time.time() + 30
    while _train_processes(str(ov)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _train_processes(str(ov)), "the training job survived its process group"
    assert not (run_dir / "adapter").exists() and any((run_dir / "checkpoints").glob("step_*"))
    assert list((wf / ".snakemake" / "locks").iterdir()), "no stale lock left behind"

    def again(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=wf, env=ENV, capture_output=True, text=True, timeout=900)

    locked = again(*cmd)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr, locked.stderr[-3000:]
    unlock = again(str(VENV_BIN / "snakemake"), "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    resumed = again(*cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (tmp_path / "results" / "smoke" / "logs" / "train" / "uniform_r4_s1.log").read_text()
    assert "resuming from" in log and "(step 0)" not in log
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 17))
