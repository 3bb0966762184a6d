"""The policy's LoRA adapter as vLLM loads it: saved to a new folder, under a new id, whenever it changed.

vLLM caches an adapter by its integer id, so every changed adapter gets a fresh id and folder
(``AdapterSync``); a change is seen from the in-place modification counters of the LoRA weights.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import weakref
from pathlib import Path

from arca.io import atomic_path


def _adapter_version(model) -> tuple[int, ...] | None:
    """A value that changes whenever a LoRA weight is changed in place (optimizer step, checkpoint load).

    ``Tensor._version`` counts in-place modifications; a peft model's LoRA parameters are only
    ever changed in place. None for a model without an adapter.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return None
    return tuple(p._version for name, p in model.named_parameters() if "lora_" in name)


class AdapterSync:
    """Saves the policy's adapter to a new folder when it changed and names it with a new LoRA id.

    Folders are ``<root>/step_<id>``, written under a temporary name and renamed when complete;
    only the latest ``keep`` are kept (vLLM has loaded an adapter by the time ``generate`` returns).
    """

    def __init__(self, root: str | Path | None = None, keep: int = 2, name: str = "policy"):
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="arca-vllm-lora-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep, self.name = keep, name
        self._ids = itertools.count(1)
        self._version: tuple[int, ...] | None = None
        self.current: tuple[str, int, str] | None = None  # (name, int id, path) of the last save
        if self._owned:
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, True)

    def request_args(self, model) -> tuple[str, int, str] | None:
        """``(lora_name, lora_int_id, lora_path)`` of the model's current adapter; None without one."""
        version = _adapter_version(model)
        if version is None:
            return None
        if self.current is None or version != self._version:
            int_id = next(self._ids)
            path = self.root / f"step_{int_id:06d}"
            with atomic_path(path) as tmp:
                model.save_pretrained(str(tmp))
            self.current, self._version = (f"{self.name}_{int_id}", int_id, str(path)), version
            for old in sorted(self.root.glob("step_*"))[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return self.current

    def close(self) -> None:
        if self._owned:
            self._finalizer()
