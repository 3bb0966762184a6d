"""The workflow's SLURM profile run for real on a one-node SLURM cluster on this machine.

``workflow/scripts/local_slurm.sh up`` installs SLURM if needed (root and apt-get), starts
slurmctld, slurmd and munge on localhost and waits for the node to be idle; ``down`` stops them
when the module ends, passed or failed. Where SLURM cannot be installed or set up (not root, no
apt-get, the packages not found, a real cluster's slurm.conf already there) every test here is
SKIPPED with the script's reason, which pytest prints (``-ra``); nothing passes without a cluster.
Two test sessions on one machine take turns (a lock file): there can be one such cluster at a time.

The smoke DAG goes through ``--profile workflow/profiles/slurm`` unchanged: every job of a rule
that is not local is submitted with sbatch, run by slurmd through the plugin's srun job step, and
its state read back with squeue (this cluster has no accounting database for sacct; see the
script). The only flags added are the status command, a short first status check and one local
core. The config asks for GPUs (``resources.gpu: true``, which changes no result), so every model
job is submitted with ``--gpus=1`` and granted one of the cluster's stand-in GPUs; the jobs still
run on the CPU (``device: cpu``). Its tables are checked against results/reference/smoke/, the
local run's tables that tests/test_pipeline.py checks every local smoke DAG against.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from arca.train import TIMING_KEYS

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SCRIPT = REPO / "workflow" / "scripts" / "local_slurm.sh"
CANNOT_SET_UP = 3  # the script's exit status when SLURM cannot be installed or set up here
# Added to the repository's profile for this cluster: squeue reads job states (no sacct here), the
# first status check comes 1 s after a job finished (not 40 s), and local rules take one core.
SLURM_FLAGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--local-cores",
    "1",
]
# The kernels results/reference/smoke/ was made with (as in tests/test_pipeline.py).
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def job_env() -> dict[str, str]:
    """Snakemake's environment, which sbatch --export=ALL hands to every job: this interpreter's
    bin folder first, offline, portable kernels, one thread per process (one core per job)."""
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {**os.environ, "PATH": path, **offline, **threads, **PORTABLE_KERNELS}


def workflow_copy(dst: Path) -> Path:
    """The Snakefile, rules, profiles and configs in a folder of their own, so that Snakemake's
    .snakemake/ (with the SLURM job logs) stays out of the repository."""
    dst.mkdir()
    shutil.copy(REPO / "Snakefile", dst)
    shutil.copytree(REPO / "workflow", dst / "workflow")
    shutil.copytree(REPO / "configs", dst / "configs")
    return dst


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def slurm_jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still holds (MinJobAge is an hour here): {job id: scontrol's fields}."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def planned_jobs(log: str) -> dict[str, int]:
    """The ``Job stats`` table at the start of a Snakemake log as {rule: count}."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    # One cluster per machine (fixed ports, /etc/slurm): a second test session waits for the first
    # one's cluster to go down. The lock goes with this process, however it ends.
    with open(Path(tempfile.gettempdir()) / "arca-local-slurm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            up = subprocess.run(["bash", str(SCRIPT), "up", str(state)], capture_output=True, text=True, timeout=900)
            if up.returncode == CANNOT_SET_UP:
                pytest.skip(up.stderr.strip().splitlines()[-1])
            assert up.returncode == 0, up.stderr[-4000:]
            yield state
        finally:
            down = subprocess.run(
                ["bash", str(SCRIPT), "down", str(state)], capture_output=True, text=True, timeout=120
            )
            assert down.returncode == 0, down.stderr[-2000:]


@pytest.fixture(scope="module")
def slurm_smoke(cluster, tmp_path_factory) -> SimpleNamespace:
    """The smoke DAG run once through the SLURM profile (asking for GPUs), results in a tmp folder."""
    tmp = tmp_path_factory.mktemp("slurm_smoke")
    wf = workflow_copy(tmp / "wf")
    overlay = write_yaml(tmp / "overlay.yaml", {"paths": {"results": str(tmp / "results")}, "resources": {"gpu": True}})
    cmd = ["--profile", "workflow/profiles/slurm", "--configfile", "configs/smoke.yaml", str(overlay), *SLURM_FLAGS]
    proc = subprocess.run(
        [str(VENV_BIN / "snakemake"), *cmd], cwd=wf, env=job_env(), capture_output=True, text=True, timeout=1500
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return SimpleNamespace(log=log, overlay=overlay, out=tmp / "results" / "smoke")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_dag_through_slurm_equals_the_local_reference(slurm_smoke):
    # Every job of a rule the Snakefile does not keep local went through sbatch, and SLURM ran it.
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_smoke.log)
    jobs = slurm_jobs()
    rules: dict[str, int] = {}
    for i in ids:
        rule = re.sub(r"_wildcards_.*", "", jobs[i]["Comment"]).removeprefix("rule_")
        rules[rule] = rules.get(rule, 0) + 1
    planned = planned_jobs(slurm_smoke.log)
    local = {r for r in planned if re.search(rf"^localrule {r}:$", slurm_smoke.log, re.M)}
    assert rules == {r: n for r, n in planned.items() if r not in local}, (rules, planned)
    assert (
        rules["train"] == 7
        and rules["evaluate"] == 7  # one job per cell
        and rules["evaluate_base"] == 1
        and local == {"all", "prepare_data", "aggregate", "figures", "heatmap"}
    )
    assert all(jobs[i]["JobState"] == "COMPLETED" for i in ids), {i: jobs[i]["JobState"] for i in ids}
    # Every one of them is a model job: its gpu=1 became a GPU request that SLURM granted.
    assert all(jobs[i].get("TresPerJob") == "gres:gpu:1" for i in ids), {i: jobs[i].get("TresPerJob") for i in ids}

    # Its tables are the local run's: every number equals the reference's (timings aside).
    check = subprocess.run(
        [sys.executable, "-m", "arca", "compare-reference", "--config", "configs/smoke.yaml"]
        + ["--config", str(slurm_smoke.overlay), "--reference", str(REPO / "results" / "reference" / "smoke")],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert "matches the reference" in (slurm_smoke.out / "reference_comparison.md").read_text()


def _running_train_job(run: str) -> str | None:
    """The SLURM id of the running training job of ``run``, if there is one."""
    for job_id, fields in slurm_jobs().items():
        if fields.get("Comment") == f"rule_train_wildcards_{run}" and fields["JobState"] == "RUNNING":
            return job_id
    return None


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_scancel_mid_training_then_the_retry_resumes_from_the_checkpoint(slurm_smoke, tmp_path):
    run, steps = "uniform_r4_s1", 16
    wf = workflow_copy(tmp_path / "wf")
    # Two results folders with the SLURM run's data and base model: one trained through SLURM and
    # cancelled, one trained straight through by `python -m arca train` for reference.
    for name in ("slurm", "ref"):
        for part in ("data", "base"):
            shutil.copytree(slurm_smoke.out / part, tmp_path / name / "smoke" / part)
    train = {"steps": steps, "checkpoint_every": 2}
    overlay = write_yaml(tmp_path / "slurm.yaml", {"paths": {"results": str(tmp_path / "slurm")}, "train": train})
    run_dir = tmp_path / "slurm" / "smoke" / "runs" / run

    # The profile's `retries: 1` resubmits the cancelled job, and the retry must resume.
    target = str(run_dir / "adapter")
    cmd = ["--profile", "workflow/profiles/slurm", target, "--configfile", "configs/smoke.yaml", str(overlay)]
    sm = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), *cmd, *SLURM_FLAGS],
        cwd=wf,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not any((run_dir / "checkpoints").glob("step_*")):
            assert sm.poll() is None, sm.stdout.read()
            time.sleep(0.05)
        job = _running_train_job(run)
        assert job is not None, f"no running training job of {run}: {slurm_jobs()}"
        subprocess.run(["scancel", job], check=True)
        assert not (run_dir / "adapter").exists(), "training finished before scancel"
        out, _ = sm.communicate(timeout=900)
    finally:
        if sm.poll() is None:
            sm.kill()  # only on a failure above; `down` cancels the jobs it left
    assert sm.returncode == 0, out[-6000:]
    assert slurm_jobs()[job]["JobState"] == "CANCELLED"
    assert f"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'" in out
    # Submitted twice: the cancelled job, then the profile's retry.
    ids = re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S+/rule_train/{run}/", out)
    assert len(ids) == 2 and ids[0] == job, out[-6000:]

    log = (tmp_path / "slurm" / "smoke" / "logs" / "train" / f"{run}.log").read_text()
    resumed = re.search(r"resuming from \S+ \(step (\d+)\)", log)
    assert resumed, log[-3000:]
    assert 2 <= int(resumed[1]) < steps  # mid-training: at or after the first checkpoint, before the end
    assert [r["step"] for r in _metrics(run_dir)] == list(range(1, steps + 1))

    ref_overlay = write_yaml(tmp_path / "ref.yaml", {"paths": {"results": str(tmp_path / "ref")}, "train": train})
    ref = subprocess.run(
        [sys.executable, "-m", "arca", "train", "--config", "configs/default.yaml", "--config", "configs/smoke.yaml"]
        + ["--config", str(ref_overlay), "--run", run],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-4000:]
    ref_dir = tmp_path / "ref" / "smoke" / "runs" / run
    assert _metrics(run_dir) == _metrics(ref_dir)
    a = load_file(str(ref_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
