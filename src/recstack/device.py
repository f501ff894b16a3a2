"""The one device choice of every stage: `device=auto|cpu|cuda` from the config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from recstack.errors import DataError


def resolve_device(pref: str = "auto") -> torch.device:
    """`auto`: CUDA when present (this process's GPU under torchrun: LOCAL_RANK), CPU otherwise."""
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DataError("device=cuda but torch sees no CUDA GPU; use device=auto or device=cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def deterministic_mode(on: bool) -> Iterator[None]:
    """`deterministic=true` around a stage: torch's deterministic algorithms (warn_only: an op without one
    is named in a warning instead of stopping the run), cuDNN without autotuning, the cuBLAS workspace
    setting its deterministic GEMMs need, attention on the math SDPA backend only, and one CPU thread
    (multi-threaded float sums differed between two processes of the same seqrec run: bench/README.md
    "Reproducibility on a CPU"). Under warn_only, torch still picks the cuDNN / memory-efficient attention
    kernels, whose backward is not deterministic: on an H200 the seqrec stage warned "cuDNN Attention defaults
    to a non-deterministic algorithm" (bench/README.md "Reproducibility on a GPU"); the math backend is plain
    matmuls and a softmax. Slower; off by default. Settings are restored afterwards, so a stage never leaks
    them."""
    if not on:
        yield
        return
    cudnn, sdp = torch.backends.cudnn, torch.backends.cuda
    fused = (sdp.enable_flash_sdp, sdp.enable_mem_efficient_sdp, sdp.enable_cudnn_sdp)  # attention kernels
    fused_prev = (sdp.flash_sdp_enabled(), sdp.mem_efficient_sdp_enabled(), sdp.cudnn_sdp_enabled())
    math_prev = sdp.math_sdp_enabled()
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
        cudnn.deterministic,
        cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    for enable in fused:
        enable(False)
    sdp.enable_math_sdp(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.set_num_threads(prev[2])
        cudnn.deterministic, cudnn.benchmark = prev[3], prev[4]
        for enable, was in zip(fused, fused_prev, strict=True):
            enable(was)
        sdp.enable_math_sdp(math_prev)
        if prev[5] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = prev[5]
