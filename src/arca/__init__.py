"""ARCA benchmark: token-level credit assignment for LoRA-GRPO (arXiv 2606.00257).

Importing the package pins x86 CPU kernels to code paths every x86-64 CPU of the last decade has
(AVX2), so that the same config gives the same numbers on Intel and AMD hosts: torch and MKL
otherwise pick AVX-512 kernels where the CPU has them, and those round differently in the last
bits, which sampling amplifies into other tokens. This must happen before torch runs its first
operation, hence here. ``ARCA_KERNELS=native`` keeps each library's own choice; a variable the
user has set already is left as it is.
"""

import os

__version__ = "0.1.0"

# torch's vectorized ATen kernels, MKL's GEMM code path (conditional numerical reproducibility)
# and oneDNN's instruction set, all capped at AVX2.
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
KERNELS_ENV = "ARCA_KERNELS"  # "portable" (default) or "native"


def _pin_kernels() -> None:
    mode = os.environ.get(KERNELS_ENV, "portable")
    if mode not in ("portable", "native"):
        raise ValueError(f"environment variable {KERNELS_ENV}={mode!r}: expected 'portable' or 'native'")
    if mode == "portable":
        for key, value in PORTABLE_KERNELS.items():
            os.environ.setdefault(key, value)


_pin_kernels()
