"""torch.distributed glue: one process = world of 1, under torchrun NCCL (GPU) or gloo (CPU).

Every helper is a no-op when no process group is initialised, so the training loop has no forks.
Randomness that must not depend on the rank (which process sees a sample, or how many there are)
is keyed by `sample_seed(seed, epoch, index, stream=...)` instead of drawn from a process's stream.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

__all__ = ["setup", "cleanup", "is_initialized", "world_size", "rank", "local_rank", "is_main", "barrier",
           "wrap", "all_reduce_sum", "all_gather_cat", "shard_indices", "sample_seed", "per_sample_uniforms",
           "MASKING_STREAM", "AUGMENT_STREAM"]

# Independent per-sample streams: the masking draws must not correlate with the augmentation.
MASKING_STREAM = 0
AUGMENT_STREAM = 1


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK; 0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1)."""
    if is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device if device.index is not None else local_rank())
        torch_dist.init_process_group(backend="nccl", device_id=torch.device("cuda", torch.cuda.current_device()))
    else:
        torch_dist.init_process_group(backend="gloo")


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
    if device.type != "cuda":
        return nn.parallel.DistributedDataParallel(model)
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    if is_initialized():
        tensor = tensor.clone()
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate equally-shaped-but-for-dim-0 tensors from every rank (ranks may differ in rows)."""
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


def shard_indices(length: int) -> list[int]:
    """This rank's share of range(length), every index exactly once over all ranks.

    Used for evaluation instead of DistributedSampler, which pads the last round with duplicates
    and so would count some images twice in the metrics.
    """
    return list(range(rank(), length, world_size()))


def sample_seed(seed: int, epoch: int, index: int, *, stream: int) -> int:
    """A 63-bit seed for one sample's draws in one epoch, well mixed (numpy SeedSequence)."""
    entropy = [seed % 2**64, epoch, int(index), stream]
    words = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def per_sample_uniforms(indices: Tensor, num_classes: int, seed: int, epoch: int) -> Tensor:
    """(B, C) masking uniforms keyed by (seed, epoch, dataset index): the same whichever rank sees a sample."""
    rows = []
    for index in indices.tolist():
        generator = torch.Generator().manual_seed(sample_seed(seed, epoch, index, stream=MASKING_STREAM))
        rows.append(torch.rand(num_classes, generator=generator))
    return torch.stack(rows)
