"""Suite-wide set-up: every test runs offline (no Hugging Face Hub or datasets downloads).

Set here, before any test module imports transformers or datasets, so no module needs its own copy.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
