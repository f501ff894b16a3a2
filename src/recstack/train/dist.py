"""Device choice and the distributed context: one code path for 1 process, torchrun CPU (gloo) or GPUs (NCCL).

Under `torchrun --nproc_per_node=N` the environment carries RANK / WORLD_SIZE / LOCAL_RANK; `setup` joins
the process group once; everything else asks `rank()` / `world()` and works unchanged with one process.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from recstack.device import resolve_device  # re-exported: stages ask dist for the device

log = logging.getLogger(__name__)


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(pref: str = "auto") -> None:
    """Join the torchrun process group (NCCL on GPU, gloo on CPU); a no-op for a single process."""
    if not launched() or dist.is_initialized():
        return
    device = resolve_device(pref)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("distributed: rank %d of %d (%s)", rank(), world(), dist.get_backend())


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_float(value: float) -> float:
    """Rank 0's value everywhere, so every rank takes the same early-stopping and LR decisions."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, 0)
    return float(t.item())
