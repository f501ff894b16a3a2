"""The one device choice of every stage: `device=auto|cpu|cuda` from the config."""

from __future__ import annotations

import os

import torch

from recstack.errors import DataError


def resolve_device(pref: str = "auto") -> torch.device:
    """`auto`: CUDA when present (this process's GPU under torchrun: LOCAL_RANK), CPU otherwise."""
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DataError("device=cuda but torch sees no CUDA GPU; use device=auto or device=cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
