"""Suite-wide set-up: every test runs offline (no Hugging Face Hub or datasets downloads), and the
smoke config's real DAG is run at most once per session for the tests that check it or compare
against it (tests/test_pipeline.py, tests/test_slurm.py).

The environment is set here, before any test module imports transformers or datasets, so no module
needs its own copy.
"""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def subprocess_env() -> dict[str, str]:
    """This environment with the test interpreter's bin folder first (snakemake, python -m arca)."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="session")
def smoke_dag(tmp_path_factory) -> SimpleNamespace:
    """The smoke config's whole DAG, run locally with `snakemake --cores 2` (no stand-ins), results
    in a tmp folder. ``args`` repeat the run; ``out`` is ``<results>/smoke``."""
    tmp = tmp_path_factory.mktemp("smoke_dag")
    overlay = tmp / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {"results": str(tmp / "results")}}))
    args = ["--cores", "2", "--configfile", "configs/smoke.yaml", str(overlay)]
    proc = subprocess.run([str(VENV_BIN / "snakemake"), *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return SimpleNamespace(args=args, out=tmp / "results" / "smoke")
