"""Every shell block of README.md, run as written in a clean shell from the repository root.

The two long commands (the whole experiment, the whole test suite) are checked for syntax and run
in their short form instead: the DAG as a dry run, pytest collecting one module. Every other block
runs as it stands (its Snakemake commands are dry runs already). The blocks use the environment
the two commands create, ``.venv/`` in the repository root; without it the test is skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```bash\n(.*?)\n```$", flags=re.S | re.M)


def readme_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def _clean_env() -> dict[str, str]:
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if "PYTHONPATH" in os.environ:  # a checkout whose package is not installed into .venv
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _run(script: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )


def short_form(block: str) -> str:
    """A long command in its quick form: the set-up left out, the DAG dry-run, pytest collecting."""
    last = block.strip().split(" && ")[-1]
    if "snakemake --cores all" in last:
        return last.replace("snakemake --cores all", "snakemake -n --cores all")
    if last.endswith("pytest"):
        return last + " --collect-only -q tests/test_packaging.py"
    raise AssertionError(f"no short form for {last!r}")


def test_the_readme_has_the_two_long_commands_and_other_blocks():
    blocks = readme_blocks()
    assert sum("pip install" in b for b in blocks) == 2
    assert len(blocks) > 2
    for block in blocks:
        if "pip install" not in block:  # every other block sets up the environment itself
            assert block.startswith(". .venv/bin/activate\n"), block


@pytest.mark.parametrize("block", [b for b in readme_blocks() if "pip install" in b], ids=["main", "tests"])
def test_the_long_commands_parse_and_run_in_short_form(block):
    syntax = subprocess.run(["bash", "-n", "-c", block], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the repository root (the README's commands make it)")
    proc = _run(short_form(block))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(
    "block", [b for b in readme_blocks() if "pip install" not in b], ids=lambda b: b.splitlines()[1][:40]
)
def test_every_other_block_runs_in_a_clean_shell(block):
    if not (ROOT / ".venv" / "bin" / "activate").exists():
        pytest.skip("no .venv in the repository root (the README's commands make it)")
    proc = _run(block)
    assert proc.returncode == 0, f"{block}\n---\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr


def test_short_forms():
    assert short_form("a && PATH=x snakemake --cores all") == "PATH=x snakemake -n --cores all"
    assert short_form("a && b pytest") == "b pytest --collect-only -q tests/test_packaging.py"
    with pytest.raises(AssertionError):
        short_form("a && echo")
