"""torch.distributed glue: one process = world of 1, under torchrun NCCL (GPU) or gloo (CPU).

Every helper is a no-op when no process group is initialised, so the training loop has no forks.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

__all__ = ["setup", "cleanup", "is_initialized", "world_size", "rank", "is_main", "barrier", "wrap",
           "all_reduce_sum", "all_gather_cat", "per_sample_uniforms"]


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def setup(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1)."""
    if is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch_dist.init_process_group(backend=backend)


def cleanup() -> None:
    if is_initialized():
        torch_dist.destroy_process_group()


def world_size() -> int:
    return torch_dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return torch_dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        torch_dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel when there are several processes, else the model itself."""
    if world_size() == 1:
        return model
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    if is_initialized():
        tensor = tensor.clone()
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate equally-shaped-but-for-dim-0 tensors from every rank (ranks may differ by one row)."""
    if not is_initialized():
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
    torch_dist.all_gather(sizes, torch.tensor([len(tensor)], device=tensor.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: len(tensor)] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    torch_dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def per_sample_uniforms(indices: Tensor, num_classes: int, seed: int, epoch: int) -> Tensor:
    """(B, C) uniforms keyed by (seed, epoch, dataset index): the same draws whichever rank sees a sample."""
    rows = []
    for index in indices.tolist():
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + int(index))
        rows.append(torch.rand(num_classes, generator=generator))
    return torch.stack(rows)
