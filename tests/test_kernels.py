"""Importing arca pins portable x86 kernels (AVX2) before torch runs, unless ARCA_KERNELS=native."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = (
    "import json, os, arca, torch; torch.ones(4) @ torch.ones(4); "
    "print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability(), "
    "'env': {k: os.environ.get(k) for k in arca.PORTABLE_KERNELS}}))"
)


def probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not cpu_has_avx2(), reason="x86 AVX2 host only")
def test_importing_arca_pins_avx2_kernels():
    got = probe()
    assert got["cap"] == "AVX2"
    assert got["env"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_native_leaves_the_libraries_choice_and_user_values_win():
    assert probe(ARCA_KERNELS="native")["env"] == {
        "ATEN_CPU_CAPABILITY": None,
        "MKL_CBWR": None,
        "ONEDNN_MAX_CPU_ISA": None,
    }
    assert probe(MKL_CBWR="COMPATIBLE")["env"]["MKL_CBWR"] == "COMPATIBLE"


def test_an_unknown_kernel_mode_is_an_error():
    out = subprocess.run(
        [sys.executable, "-c", "import arca"],
        env={**os.environ, "ARCA_KERNELS": "fast"},
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "ARCA_KERNELS='fast'" in out.stderr


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not cpu_has_avx2(), reason="x86 AVX2 host only")
def test_bench_kernels_runs_both_modes_side_by_side(tmp_path):
    from arca.bench.kernels import compare_kernels, format_kernels
    from arca.config import load_config

    cfg = load_config("configs/smoke.yaml", [f"paths.results={tmp_path}"])
    got = compare_kernels(cfg, steps=1, rounds=1)
    assert got["capability"]["portable"] == "AVX2"  # native: whatever this CPU offers
    assert all(len(v) == 1 and v[0] > 0 for v in got["raw_seconds"].values())
    assert got["portable_over_native"] == pytest.approx(
        got["median_step_seconds"]["portable"] / got["median_step_seconds"]["native"]
    )
    assert "portable / native:" in format_kernels(got)
