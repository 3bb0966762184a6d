"""``python -m arca gpu-smoke`` on CPU, in a subprocess where the heavy optional packages cannot
be imported: it must run with torch, transformers and peft only, and list every credit method."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arca.credit import REGISTRY
from arca.smoke import COLUMNS, SmokeRow, format_table

ROOT = Path(__file__).resolve().parents[1]
# Not installed on a bare GPU machine; a `None` entry in sys.modules makes any import of them fail.
BLOCKED = ("datasets", "math_verify", "snakemake", "pandas", "matplotlib", "pyarrow", "vllm")

GUARD = (
    "import sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None\n"
    "from arca.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"leaked = [n for n in {BLOCKED!r} if sys.modules.get(n) is not None]\n"
    "assert not leaked, leaked\n"
    "sys.exit(code)\n"
)


def parse_table(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [COLUMNS[0]])
    return {parts[0]: parts[1:] for parts in (line.split() for line in lines[start + 2 :]) if parts}


@pytest.mark.slow
def test_gpu_smoke_on_cpu_without_optional_packages(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            GUARD,
            "gpu-smoke",
            "--config",
            "configs/smoke.yaml",
            "--set",
            "device=auto",
            "--steps",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = parse_table(proc.stdout)
    assert set(table) == set(REGISTRY), proc.stdout
    for method, cells in table.items():
        assert len(cells) == len(COLUMNS) - 1, (method, cells)
        assert all(math.isfinite(float(c)) for c in cells), (method, cells)
    assert "device=cpu" in proc.stdout
    assert not list(tmp_path.glob("arca-smoke-*"))  # the temporary work folder is gone


def test_table_marks_failures_and_non_finite_rows():
    ok = SmokeRow("uniform", 0.1, 0.2, 0.5, 0.0, 1.0, 100.0)
    failed = SmokeRow("arca", error="RuntimeError: boom")
    nan = SmokeRow("surprisal", 0.1, 0.2, 0.5, math.nan, 1.0, 100.0)
    assert ok.finite and not failed.finite and not nan.finite
    table = parse_table(format_table([ok, failed, nan]))
    assert table["uniform"] == ["0.100", "0.200", "0.500", "0.000", "1.000", "100"]
    assert table["arca"] == ["FAILED"]


def test_steps_must_be_positive():
    from arca.config import load_config
    from arca.smoke import run_smoke

    with pytest.raises(ValueError, match="--steps"):
        run_smoke(load_config("configs/smoke.yaml"), 0)
