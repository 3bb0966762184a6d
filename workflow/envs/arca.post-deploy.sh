#!/usr/bin/env bash
# Snakemake runs this once in a new environment made from arca.yaml, from its working directory:
# the repository root, where the Snakefile is. It installs the package (editable, so jobs run the
# checked-out code; --no-deps because arca.yaml pins every dependency).
set -euo pipefail
if ! grep -qs '^name = "arca-bench"' pyproject.toml; then
  echo "arca.post-deploy.sh: run snakemake from the repository root (no arca-bench pyproject.toml in $PWD)" >&2
  exit 1
fi
"$CONDA_PREFIX/bin/python" -m pip install --no-deps -e .
