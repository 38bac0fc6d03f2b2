"""Class maps of a trained model at each image's own resolution: evaluation items, multi-scale and
flip inference, per-image upsampling.

The network sees the image resized to its training size (and, for multi-scale inference, to each
scale of it, optionally mirrored); the class maps of every pass are taken at their patch grid,
mirrored back, upsampled bilinearly to the *original* image size and summed. Items of one batch may
have different original sizes (VOC: 500×375 and 375×500), so the original masks travel as a list and
maps are upsampled per group of equal size — no padding ever enters a map or a score.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset, default_collate

from kyam_lib.method.class_maps import class_maps as aggregate_class_maps
from kyam_lib.method.model import KyamOutput, KyamViT

__all__ = ["class_maps_for", "EvalItems", "collate_eval", "scaled_size", "grid_class_maps", "maps_at_sizes",
           "max_normalise", "size_groups"]


def class_maps_for(model: KyamViT, output: KyamOutput, image_size: tuple[int, int], *, blocks: Any = "all",
                   head_weighting: Any = "gates") -> Tensor:
    """(B, C, H, W) maps: class-token attention, or class activation maps for the "cam" classifier."""
    if output.patch_logits is not None:
        B, C, _ = output.patch_logits.shape
        cams = output.patch_logits.float().relu().reshape(B, C, *output.grid_size)
        return F.interpolate(cams, size=image_size, mode="bilinear", align_corners=False)
    gates_applied = output.class_attention.shape[2] == 1 < output.head_gates.shape[1]  # attention_heads="gated_mean"
    return aggregate_class_maps(output.class_attention, None if gates_applied else output.head_gates,
                                grid_size=output.grid_size, image_size=image_size, blocks=blocks,
                                head_weighting="mean" if gates_applied else head_weighting)


class EvalItems(Dataset):
    """A dataset (or Subset of one) whose items carry the resized image and the *original* mask.

    Item: the dataset's item with ``mask`` replaced by the untransformed (H0, W0) int64 mask, and
    with ``raw_image`` (H0, W0, 3) uint8 added when `with_raw_image` (for the dense CRF).
    """

    def __init__(self, dataset, *, with_raw_image: bool = False):
        self.dataset = dataset
        self.base = dataset.dataset if isinstance(dataset, Subset) else dataset
        self.indices = list(dataset.indices) if isinstance(dataset, Subset) else list(range(len(dataset)))
        self.with_raw_image = with_raw_image

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        image, mask = self.base.load(index)
        item = self.base.make_item(index, image, mask, self.base.image_labels(index, mask))
        item["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        if self.with_raw_image:
            item["raw_image"] = _as_uint8(self.base._display(image))
        return item


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.clip(np.rint(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8))


def collate_eval(items: list[dict]) -> dict:
    """Stack the equal-sized fields (image, labels, index); keep masks, ids and raw images as lists."""
    listed = ("mask", "raw_image", "id")
    batch = default_collate([{k: v for k, v in item.items() if k not in listed} for item in items])
    for key in listed:
        if key in items[0]:
            batch[key] = [item[key] for item in items]
    return batch


def scaled_size(size: tuple[int, int], scale: float, patch_size: int) -> tuple[int, int]:
    """`size` × `scale`, rounded to the nearest positive multiple of the patch size."""
    return tuple(max(patch_size, int(round(side * scale / patch_size)) * patch_size) for side in size)


def grid_class_maps(model: KyamViT, images: Tensor, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                    blocks: Any = "all", head_weighting: Any = "gates") -> tuple[Tensor, list[Tensor]]:
    """Logits of the images as given and the class maps of every pass, each at its own patch grid.

    images (B, C_in, H, W) at the training size. Returns (logits (B, C), [maps (B, C, h_s, w_s)]),
    one map per scale and (with `flip`) one more per mirrored pass, already mirrored back. The
    logits always come from the unscaled, unmirrored pass, so class selection and classifier
    scores do not depend on the inference scales. Each scale is one forward pass; the mirrored
    copies share it (batch 2B).
    """
    if 1.0 not in scales:
        raise ValueError(f"scales: must contain 1.0 (the classifier's own input size), got {list(scales)}")
    attention = model.config.classifier != "cam"
    heads = "gated_mean" if head_weighting == "gates" else "all"
    batch = images.shape[0]
    logits, maps = None, []
    for scale in scales:
        size = scaled_size(tuple(images.shape[-2:]), scale, model.config.patch_size)
        inputs = images if size == tuple(images.shape[-2:]) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        if flip:
            inputs = torch.cat([inputs, inputs.flip(-1)])
        output = model(inputs, return_attention=attention, attention_heads=heads)
        grid = class_maps_for(model, output, output.grid_size, blocks=blocks, head_weighting=head_weighting).float()
        if scale == 1.0 and logits is None:
            logits = output.logits[:batch]
        maps.append(grid[:batch])
        if flip:
            maps.append(grid[batch:].flip(-1))
    return logits, maps


def size_groups(sizes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Positions of the items of each distinct (H, W), in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, size in enumerate(sizes):
        groups[tuple(size)].append(position)
    return dict(groups)


def maps_at_sizes(grid_maps: Sequence[Tensor], sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Sum of the passes' maps, each upsampled bilinearly to its item's size: a list of (C, H_i, W_i)."""
    out: list[Tensor | None] = [None] * len(sizes)
    for size, positions in size_groups(sizes).items():
        index = torch.tensor(positions, device=grid_maps[0].device)
        total = sum(F.interpolate(maps.index_select(0, index), size=size, mode="bilinear", align_corners=False)
                    for maps in grid_maps)
        for row, position in enumerate(positions):
            out[position] = total[row]
    return out  # type: ignore[return-value]


def max_normalise(maps: Tensor) -> Tensor:
    """(..., C, H, W) non-negative maps divided by each map's maximum (an all-zero map stays zero).

    The rules that follow are unchanged by a positive factor per map; the maps are put in this form
    once so that maps written in the IRN format and read back give bit-identical pseudo-masks.
    """
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))
