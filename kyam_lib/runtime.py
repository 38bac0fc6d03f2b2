"""Where and how fast a run executes: device, seeding, attention kernels, DataLoader placement.

None of it changes what a run computes on CPU; on CUDA, `deterministic` trades speed for bitwise
repeatability (README, "Determinism").
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import distributed as dist
from .protocol import resolve_num_workers

__all__ = ["resolve_device", "seed_everything", "attention_kernels", "to_device", "loader_settings", "cpu_threads"]


def resolve_device(name: str) -> torch.device:
    """"auto" = this process's GPU (torchrun's LOCAL_RANK) when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device("cuda", dist.local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank())
    return device


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if device.type == "cuda":
            # cuBLAS picks reduction orders per workspace; a fixed workspace makes them repeatable.
            # Only effective before the first cuBLAS call of the process.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel warns instead of stopping a long run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def attention_kernels(device: torch.device, deterministic: bool):
    """Context for the model's forward: on CUDA with `deterministic`, the math attention kernel only.

    The fused kernels (flash, memory-efficient, cuDNN) may accumulate the backward with atomics,
    which is not repeatable under warn-only deterministic mode; the math kernel is plain matmuls.
    """
    if device.type == "cuda" and deterministic:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


@contextlib.contextmanager
def cpu_threads(count: int):
    """Run the block with `count` intra-op CPU threads (0: leave torch's setting), then restore it."""
    if count <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory, so the copy does not wait for the GPU."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def loader_settings(cfg: Any, device: torch.device, *, processes: int = 1) -> dict[str, Any]:
    """DataLoader keyword arguments of cfg's placement fields: workers, pinned memory, persistence."""
    workers = resolve_num_workers(cfg.num_workers, processes=processes)
    settings: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0 and getattr(cfg, "persistent_workers", False):
        settings["persistent_workers"] = True
    return settings
