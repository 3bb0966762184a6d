"""The workflow's SLURM profile run for real on a one-node SLURM cluster on this machine.

``workflow/scripts/local_slurm.sh up`` installs SLURM if needed (root and apt-get), starts
slurmctld, slurmd and munge on localhost and waits for the node to be idle; ``down`` stops them
when the module ends, passed or failed. Where SLURM cannot be installed or set up (not root, no
apt-get, the packages not found, a real cluster's slurm.conf already there) every test here is
SKIPPED with the script's reason, which pytest prints (``-ra``); nothing passes without a cluster.

The smoke DAG goes through ``--profile workflow/profiles/slurm`` unchanged: every non-local job is
submitted with sbatch, run by slurmd through the plugin's srun job step, and its state read back
with squeue (this cluster has no accounting database for sacct, see the script). The only flags
added are the status command, a short first status check, and one local core. The config asks
for GPUs (``resources.gpu: true``, settings that change no result), so every model job is
submitted with ``--gpus=1`` and granted one of the cluster's stand-in GPUs; the jobs still run on
the CPU (``device: cpu``).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from arca.train import TIMING_KEYS

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

SCRIPT = REPO / "workflow" / "scripts" / "local_slurm.sh"
CANNOT_SET_UP = 3  # the script's exit status when SLURM cannot be installed or set up here
# Added to the repository's profile for this cluster: squeue reads job states (no sacct here), the
# first status check comes 1 s after a job finished (not 40 s), and local rules take one core.
SLURM_FLAGS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
               "--local-cores", "1"]
# Rules that the Snakefile keeps on the submitting host.
LOCAL_RULES = {"all", "prepare_data", "aggregate", "figures"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    try:
        up = subprocess.run(["bash", str(SCRIPT), "up", str(state)], capture_output=True, text=True, timeout=900)
        if up.returncode == CANNOT_SET_UP:
            pytest.skip(up.stderr.strip().splitlines()[-1])
        assert up.returncode == 0, up.stderr[-4000:]
        yield state
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "down", str(state)], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


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


def job_env() -> dict[str, str]:
    """Snakemake's environment, which sbatch --export=ALL hands to every job: this interpreter's
    bin folder first, offline, and one thread per process (SLURM hands out one core per job)."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def slurm_jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still holds (MinJobAge is an hour here): {job id: scontrol's fields}."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def submitted(log: str) -> dict[str, str]:
    """{SLURM job id: rule} from the plugin's 'has been submitted' lines, rules from the comments."""
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    jobs = slurm_jobs()
    return {i: re.sub(r"_wildcards_.*", "", jobs[i]["Comment"]).removeprefix("rule_") for i in ids}


def tables(folder: Path) -> dict[str, object]:
    """Every table, CSVs as rows without their timing columns (seconds differ run to run)."""
    out: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".csv":
            with open(path, newline="") as f:
                out[path.name] = [{k: v for k, v in row.items() if not k.endswith("_seconds")}
                                  for row in csv.DictReader(f)]
        else:
            out[path.name] = path.read_text()
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_dag_through_slurm_equals_local_run(cluster, request, tmp_path):
    smoke_dag = request.getfixturevalue("smoke_dag")  # after `cluster`, so that a skip comes first
    wf = workflow_copy(tmp_path / "wf")
    overlay = write_yaml(tmp_path / "overlay.yaml",
                         {"paths": {"results": str(tmp_path / "results")}, "resources": {"gpu": True}})
    proc = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--profile", "workflow/profiles/slurm", "--configfile", "configs/smoke.yaml",
         str(overlay), *SLURM_FLAGS],
        cwd=wf, env=job_env(), capture_output=True, text=True, timeout=1500,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    # Every job of a non-local rule went through sbatch, and SLURM ran it to completion.
    planned = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", log.split("Job stats:")[1].split("total")[0], re.M)}
    jobs = submitted(log)
    by_rule: dict[str, int] = {}
    for rule in jobs.values():
        by_rule[rule] = by_rule.get(rule, 0) + 1
    assert by_rule == {r: n for r, n in planned.items() if r not in LOCAL_RULES}, (by_rule, planned)
    assert by_rule["train"] == 7 and by_rule["evaluate"] == 8
    states = slurm_jobs()
    assert all(states[i]["JobState"] == "COMPLETED" for i in jobs), {i: states[i]["JobState"] for i in jobs}
    # The rules' gpu=1 became a GPU request SLURM granted, on every model job and on no other.
    model_rules = {"build_base", "train", "evaluate", "probe_rollouts", "heatmap"}
    assert set(by_rule) == model_rules
    assert all(states[i].get("TresPerJob") == "gres:gpu:1" for i in jobs), {i: states[i].get("TresPerJob") for i in jobs}

    # The same tables as the local run, number for number (timings aside).
    mine, local = tables(tmp_path / "results" / "smoke" / "tables"), tables(smoke_dag.out / "tables")
    assert mine.keys() == local.keys()
    for name in local:
        assert mine[name] == local[name], name
    assert len(local["runs.csv"]) == 8  # the base model and 7 runs: the tables compared are not empty


def _train_job(run: str) -> str | None:
    """The SLURM id of the running training job of ``run``, if there is one."""
    for job_id, fields in slurm_jobs().items():
        if fields.get("Comment") == f"rule_train_wildcards_{run}" and fields["JobState"] == "RUNNING":
            return job_id
    return None


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_scancel_mid_training_then_the_retry_resumes_from_the_checkpoint(cluster, request, tmp_path):
    smoke_dag = request.getfixturevalue("smoke_dag")  # after `cluster`, so that a skip comes first
    run, steps = "uniform_r4_s1", 16
    wf = workflow_copy(tmp_path / "wf")
    # Two results folders with the local run's data and base model: one trained through SLURM and
    # cancelled, one trained straight through by `python -m arca train` for reference.
    for name in ("slurm", "ref"):
        for part in ("data", "base"):
            shutil.copytree(smoke_dag.out / part, tmp_path / name / "smoke" / part)
    train = {"steps": steps, "checkpoint_every": 2}
    overlay = write_yaml(tmp_path / "slurm.yaml", {"paths": {"results": str(tmp_path / "slurm")}, "train": train})
    run_dir = tmp_path / "slurm" / "smoke" / "runs" / run

    # The profile's `retries: 1` resubmits the cancelled job, and the retry must resume.
    sm = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), "--profile", "workflow/profiles/slurm", str(run_dir / "adapter"),
         "--configfile", "configs/smoke.yaml", str(overlay), *SLURM_FLAGS],
        cwd=wf, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not any((run_dir / "checkpoints").glob("step_*")):
            assert sm.poll() is None, sm.stdout.read()
            time.sleep(0.05)
        job = _train_job(run)
        assert job is not None, f"no running training job of {run}: {slurm_jobs()}"
        subprocess.run(["scancel", job], check=True)
        assert not (run_dir / "adapter").exists(), "training finished before scancel"
        out, _ = sm.communicate(timeout=900)
    finally:
        if sm.poll() is None:
            sm.kill()  # only on a failure above; Snakemake's own jobs are cancelled by `down`
    assert sm.returncode == 0, out[-6000:]
    assert slurm_jobs()[job]["JobState"] == "CANCELLED"
    assert f"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'" in out
    # Submitted twice: the cancelled job, then the profile's retry.
    ids = re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S+/rule_train/{run}/", out)
    assert len(ids) == 2 and ids[0] == job, out[-6000:]

    log = (tmp_path / "slurm" / "smoke" / "logs" / "train" / f"{run}.log").read_text()
    resumed = re.search(r"resuming from \S+ \(step (\d+)\)", log)
    assert resumed, log[-3000:]
    assert 2 <= int(resumed[1]) < steps  # mid-training: after the first checkpoint, before the end
    assert [r["step"] for r in _metrics(run_dir)] == list(range(1, steps + 1))

    ref_overlay = write_yaml(tmp_path / "ref.yaml", {"paths": {"results": str(tmp_path / "ref")}, "train": train})
    ref = subprocess.run(
        [sys.executable, "-m", "arca", "train", "--config", "configs/default.yaml", "--config", "configs/smoke.yaml",
         "--config", str(ref_overlay), "--run", run],
        cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-4000:]
    ref_dir = tmp_path / "ref" / "smoke" / "runs" / run
    assert _metrics(run_dir) == _metrics(ref_dir)
    from safetensors.torch import load_file

    a = load_file(str(ref_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
