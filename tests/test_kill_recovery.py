"""kill -9 of the whole Snakemake process group while a job renames its finished outputs into place.

A real ``snakemake`` runs the smoke config's data step. A ``sitecustomize`` put first on the run's
``PYTHONPATH`` (this test's fault injection; nothing of it is in the package) wraps ``os.replace``
and ``os.rename`` and, at the rename that would put the job's last output in place, kills
Snakemake's process group, so the kill lands at the same point of the same job every time.
Marked slow (50 to 90 s on 2 cores: four Snakemake start-ups of about 12 s each, and the data step).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import REPO, VENV_BIN, snakemake_env

ENV = snakemake_env()

# Runs in every Python process of the killed run (Snakemake and its jobs); only the process that
# renames onto ARCA_KILL_AT acts. It kills the group before the rename happens, itself included.
HOOK = textwrap.dedent(
    """
    import os, signal, time

    _target = os.path.abspath(os.environ["ARCA_KILL_AT"])
    _pgid = int(os.environ["ARCA_KILL_PGID"])

    def _kill_on(real):
        def rename(src, dst, *args, **kwargs):
            if os.path.abspath(os.fspath(dst)) == _target:
                os.killpg(_pgid, signal.SIGKILL)
                while True:  # the signal is on its way to this process too
                    time.sleep(1)
            return real(src, dst, *args, **kwargs)
        return rename

    os.replace = _kill_on(os.replace)
    os.rename = _kill_on(os.rename)
    """
)


def _workflow(root: Path) -> Path:
    """A copy of the workflow in ``root``: the stale lock a kill leaves lives in its .snakemake/."""
    wf = root / "wf"
    wf.mkdir(parents=True)
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, wf)
    for name in ("workflow", "configs"):
        shutil.copytree(REPO / name, wf / name)  # symlinks (workflow/envs/arca.yaml) copied as files
    return wf


def _command(root: Path) -> list[str]:
    overlay = root / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {"results": str(root / "results"), "cache": str(root / "cache")}}))
    return [str(VENV_BIN / "snakemake"), "--cores", "1", "--configfile", "configs/smoke.yaml", str(overlay), "--"]


def _snakemake(wf: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=wf, env=ENV, capture_output=True, text=True, timeout=300)


def _outputs(root: Path) -> dict[str, Path]:
    data = root / "results" / "smoke" / "data"
    return {"train": data / "train.jsonl", "test": data / "test.jsonl"}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_snakemake_killed_during_the_final_renames_recovers_with_rerun_incomplete(tmp_path):
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["data"]
    n_records = {"train": smoke["n_train"], "test": smoke["n_test"]}

    # The clean, uninterrupted run the recovered one must equal, byte for byte.
    clean_root = tmp_path / "clean"
    clean_wf = _workflow(clean_root)
    done = _snakemake(clean_wf, *_command(clean_root), "prepare_data")
    assert done.returncode == 0, done.stderr[-3000:]
    clean = {name: path.read_bytes() for name, path in _outputs(clean_root).items()}
    assert {name: len(_records(p)) for name, p in _outputs(clean_root).items()} == n_records

    # The same run, killed at the rename that puts its last output (test.jsonl) in place.
    root = tmp_path / "killed"
    wf = _workflow(root)
    cmd = _command(root)
    outputs = _outputs(root)
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    # The group id is the pid of the process started in a new session, known only once it runs:
    # a shell puts its own pid ($$) in the environment, then becomes Snakemake (exec keeps the pid).
    sm = subprocess.Popen(
        ["/bin/sh", "-c", 'ARCA_KILL_PGID=$$ exec "$@"', "sh", *cmd, "prepare_data"],
        cwd=wf,
        env={
            **ENV,
            "ARCA_KILL_AT": str(outputs["test"]),
            "PYTHONPATH": os.pathsep.join([str(hook), ENV.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a login shell or batch job has
    )
    log = sm.communicate(timeout=300)[0]
    assert sm.returncode == -signal.SIGKILL, f"the kill never came (exit {sm.returncode}):\n{log[-3000:]}"

    # No output is half-written: each is absent or complete. The kill came between the two renames.
    assert len(_records(outputs["train"])) == n_records["train"]
    assert outputs["train"].read_bytes() == clean["train"]
    assert not outputs["test"].exists()
    assert list(outputs["test"].parent.glob(".test.jsonl.tmp*")), "the killed writer's temporary is beside it"
    assert list((wf / ".snakemake" / "locks").iterdir()), "no stale lock left behind"

    # The recovery of docs/security.md: unlock, then the same command with --rerun-incomplete.
    unlock = _snakemake(wf, str(VENV_BIN / "snakemake"), "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    rerun = _snakemake(wf, *cmd[:-1], "--rerun-incomplete", "--", "prepare_data")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {name: path.read_bytes() for name, path in outputs.items()} == clean
    # ... and nothing the killed job was writing is left beside them
    listing = sorted(p.name for p in outputs["train"].parent.iterdir())
    assert listing == sorted(p.name for p in _outputs(clean_root)["train"].parent.iterdir())
