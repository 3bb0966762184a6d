"""ARCA benchmark: token-level credit assignment for LoRA-GRPO (arXiv 2606.00257)."""

__version__ = "0.1.0"
