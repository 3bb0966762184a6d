"""The conda environment (environment.yml, which every rule uses through workflow/envs/arca.yaml)
and pyproject.toml must pin the same packages at the same versions; the README's commands and CI
must agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_ENV = ROOT / "environment.yml"
RULE_ENV = ROOT / "workflow" / "envs" / "arca.yaml"


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_reqs() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in ("test", "bench"):
        reqs += meta["optional-dependencies"][extra]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _conda_pip_reqs() -> dict[str, str]:
    env = yaml.safe_load(CONDA_ENV.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.replace(" ", "") for r in pip}


def test_environment_matches_pyproject():
    py, conda = _pyproject_reqs(), _conda_pip_reqs()
    py.pop("torch"), conda.pop("torch")  # a range in the package, one version in the environment
    assert py == conda, (
        f"differ: only in pyproject {set(py.items()) - set(conda.items())}, "
        f"only in environment.yml {set(conda.items()) - set(py.items())}"
    )


def test_runtime_dependencies_are_what_the_package_imports():
    # A config is checked by loading it into the dataclasses: no JSON schema, no validator.
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "jsonschema" not in {_name(r) for r in runtime}
    assert "jsonschema" not in _conda_pip_reqs()


def test_environment_pins_the_torch_the_readme_installs():
    pin = _conda_pip_reqs()["torch"]
    assert re.fullmatch(r"torch==[\d.]+", pin), pin
    version = pin.split("==")[1]
    assert all(f"torch=={version} " in c for c in _readme_commands() if "pip install" in c)
    low = _pyproject_reqs()["torch"].removeprefix("torch>=")
    assert tuple(map(int, version.split("."))) >= tuple(map(int, low.split(".")))


def test_environment_installs_the_package_after_creation():
    # Snakemake copies the environment file elsewhere, so a relative `-e .` in it would point
    # nowhere: the package is installed by the post-deploy script Snakemake runs beside it.
    assert not any(r.startswith("-") for r in _conda_pip_reqs().values())
    script = RULE_ENV.with_name("arca.post-deploy.sh")
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "pip install --no-deps -e ." in text
    # one environment file: the rules' is a link to the one users create by hand
    assert RULE_ENV.is_symlink() and RULE_ENV.resolve() == CONDA_ENV.resolve()


def test_environment_python_matches_requires_python():
    env = yaml.safe_load(CONDA_ENV.read_text())
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major, minor = py.split("=")[1].split(".")[:2]
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec.startswith(">=")
    lo = tuple(int(x) for x in spec[2:].split("."))
    # the conda environment pins the oldest Python the package claims to support, so that claim is tested
    assert (int(major), int(minor)) == lo


def test_requires_python_covers_the_pins():
    # numpy 2.4, pandas 3, transformers 5, snakemake 9 and matplotlib 3.11 publish nothing for 3.10
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert tuple(int(x) for x in spec[2:].split(".")) >= (3, 11)


def test_license_and_citation_files():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["version"] == meta["version"]
    assert cff["title"] and cff["authors"] and "2606.00257" in str(cff["references"])


def test_torch_is_a_range_not_a_cuda_pin():
    # A hard torch pin in the package metadata would pull a CUDA wheel on CPU machines.
    assert _pyproject_reqs()["torch"].startswith("torch>=")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    commands = _readme_commands()
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd.strip() in (ROOT / ".ci" / "run").read_text()


def test_readme_gives_exactly_two_commands_main_and_tests():
    commands = [c for c in _readme_commands() if "pip install" in c]
    assert len(commands) == 2
    assert any("snakemake --cores all" in c for c in commands)
    assert any("pytest" in c for c in commands)
    for c in commands:  # CPU torch from the local wheel, in the same pip call as the package
        assert "pip install torch==2.13.0 -e ." in c or "pip install torch==2.13.0 -e '." in c
