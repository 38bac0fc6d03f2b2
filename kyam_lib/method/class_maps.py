"""Class maps from class-token attention: choose blocks, weight heads, upsample to the image.

The attention the method is about is the post-softmax attention from each class token to the
patch tokens. A class map sums it over the chosen blocks, averages it over the heads of each block
(by default weighted by the evaluation head gates, so a pruned head contributes nothing), reshapes
it to the patch grid and upsamples it bilinearly to the image size.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_maps", "block_indices", "head_weights", "gated_head_mean"]

BlockSpec = Literal["all"] | int | Sequence[int]
HeadWeighting = Literal["gates", "mean"] | int


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(value)
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name}: sizes must be positive, got {pair}")
    return pair  # type: ignore[return-value]


def block_indices(blocks: BlockSpec, num_blocks: int) -> list[int]:
    """Resolve a block selection ("all", last k, or explicit indices) to sorted non-negative indices."""
    if isinstance(blocks, str):
        if blocks != "all":
            raise ValueError(f"blocks: expected 'all', an int k (last k blocks) or a list of indices, got {blocks!r}")
        return list(range(num_blocks))
    if isinstance(blocks, bool):
        raise TypeError(f"blocks: expected 'all', an int or a sequence of ints, got {blocks!r}")
    if isinstance(blocks, int):
        if not 1 <= blocks <= num_blocks:
            raise ValueError(f"blocks: last k needs 1 <= k <= {num_blocks} (number of blocks), got {blocks}")
        return list(range(num_blocks - blocks, num_blocks))
    if not isinstance(blocks, Sequence) or len(blocks) == 0:
        raise ValueError(f"blocks: expected a non-empty sequence of block indices, got {blocks!r}")
    resolved = []
    for index in blocks:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"blocks: block indices must be ints, got {index!r}")
        if not -num_blocks <= index < num_blocks:
            raise ValueError(f"blocks: block index {index} out of range for {num_blocks} blocks")
        resolved.append(index % num_blocks)
    if len(set(resolved)) != len(resolved):
        # A repeated block would silently count twice in the sum.
        raise ValueError(f"blocks: repeated block index in {list(blocks)!r}")
    return sorted(resolved)


def head_weights(
        head_gates: Tensor | None,
        *,
        num_blocks: int,
        num_heads: int,
        head_weighting: HeadWeighting = "gates",
) -> Tensor:
    """Per-block head weights (L, H_heads), each row summing to 1 (or 0 for a fully pruned block)."""
    if isinstance(head_weighting, bool):
        raise TypeError(f"head_weighting: expected 'gates', 'mean' or a head index, got {head_weighting!r}")
    if isinstance(head_weighting, int):
        if not -num_heads <= head_weighting < num_heads:
            raise ValueError(f"head_weighting: head index {head_weighting} out of range for {num_heads} heads")
        weights = torch.zeros(num_blocks, num_heads)
        weights[:, head_weighting] = 1.0
        return weights
    if head_weighting == "mean":
        return torch.full((num_blocks, num_heads), 1.0 / num_heads)
    if head_weighting != "gates":
        raise ValueError(f"head_weighting: expected 'gates', 'mean' or a head index, got {head_weighting!r}")
    if head_gates is None:
        return torch.full((num_blocks, num_heads), 1.0 / num_heads)
    if head_gates.shape != (num_blocks, num_heads):
        raise ValueError(
            f"head_gates: expected shape ({num_blocks}, {num_heads}) (blocks, heads), got {tuple(head_gates.shape)}")
    gates = head_gates.detach().to("cpu", torch.float64)
    if not torch.isfinite(gates).all() or gates.min() < 0 or gates.max() > 1:
        raise ValueError("head_gates: gate values must lie in [0, 1]")
    open_mass = gates.sum(dim=1, keepdim=True)
    # A block whose heads are all closed has no surviving attention, so it adds nothing.
    return torch.where(open_mass > 0, gates / open_mass.clamp_min(1e-12), torch.zeros_like(gates)).float()


def class_maps(
        class_attention: Tensor,
        head_gates: Tensor | None = None,
        *,
        grid_size: int | Sequence[int],
        image_size: int | Sequence[int],
        blocks: BlockSpec = "all",
        head_weighting: HeadWeighting = "gates",
) -> Tensor:
    """Aggregate class-token attention into per-class maps at image resolution.

    Args:
        class_attention: (B, L, H_heads, C, P) post-softmax attention from the C class tokens to
            the P = h*w patch tokens, for each of the L blocks and H_heads heads.
        head_gates: (L, H_heads) evaluation gates in [0, 1] (normally {0, 1}); None = all open.
        grid_size: patch grid (h, w), or one int for a square grid.
        image_size: output size (H, W), or one int for a square image.
        blocks: "all", an int k (the last k blocks) or a sequence of block indices.
        head_weighting: "gates" (gate-weighted mean over heads: closed heads are excluded and a
            block whose heads are all closed contributes zero), "mean" (plain mean over all heads,
            gates ignored), or an int (that head alone, gates ignored).

    Returns:
        (B, C, H, W) class maps: sum over the chosen blocks, upsampled bilinearly
        (align_corners=False), on the input's device and dtype.
    """
    if not isinstance(class_attention, Tensor) or class_attention.ndim != 5:
        shape = tuple(class_attention.shape) if isinstance(class_attention, Tensor) else type(class_attention)
        raise ValueError(f"class_attention: expected a (B, L, H_heads, C, P) tensor, got {shape}")
    if not class_attention.is_floating_point():
        raise TypeError(f"class_attention: expected a floating-point tensor, got {class_attention.dtype}")
    batch, num_blocks, num_heads, num_classes, num_patches = class_attention.shape
    grid_h, grid_w = _pair(grid_size, "grid_size")
    out_size = _pair(image_size, "image_size")
    if grid_h * grid_w != num_patches:
        raise ValueError(
            f"grid_size: {grid_h}x{grid_w} = {grid_h * grid_w} patches, but class_attention has P = {num_patches}")

    chosen = block_indices(blocks, num_blocks)
    weights = head_weights(head_gates, num_blocks=num_blocks, num_heads=num_heads, head_weighting=head_weighting)
    weights = weights[chosen].to(device=class_attention.device, dtype=class_attention.dtype)
    index = torch.tensor(chosen, device=class_attention.device)
    selected = class_attention.index_select(1, index)
    # Weighted mean over heads and sum over blocks in one contraction.
    maps = torch.einsum("blhcp,lh->bcp", selected, weights)
    maps = maps.reshape(batch, num_classes, grid_h, grid_w)
    return F.interpolate(maps, size=out_size, mode="bilinear", align_corners=False)


def gated_head_mean(class_attention: Tensor, gate: Tensor) -> Tensor:
    """(B, H, C, P) one block's class attention, gate (H,) → (B, 1, C, P) mean over the open heads.

    Weights gate / sum(gate), and zero for a block whose heads are all closed: the head weighting
    of `class_maps(..., head_weighting="gates")`, applied one block at a time.
    """
    weights = gate.detach().to(class_attention.dtype)
    open_mass = weights.sum()
    weights = torch.where(open_mass > 0, weights / open_mass.clamp_min(torch.finfo(weights.dtype).tiny),
                          torch.zeros_like(weights))
    return torch.einsum("bhcp,h->bcp", class_attention, weights).unsqueeze(1)
