"""Pseudo-masks from class maps: which classes, the three labelling rules, the background t-curve
and overlay figures. Writing and reading them as PNGs is `kyam_lib.masks_io`.

Rules (METHOD.md, "Attention maps and pseudo-masks"):
- no background (`masks_without_background`): each selected class map is thresholded at its own
  spatial mean; classes are painted in ascending probability so the most confident class wins
  overlaps; unassigned pixels take the label of the nearest assigned pixel (Euclidean distance).
- background score (`masks_with_background`): selected maps min-max normalised per image, a
  constant background score t, argmax. Output 0 = background, k + 1 = class k.
- mean threshold with background (`masks_mean_threshold_background`): as the first rule, but
  unassigned pixels are background.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from kyam_lib.data.palette import flat_colours
from kyam_lib.method.metrics import valid_pixels

__all__ = [
    "DEFAULT_THRESHOLDS",
    "select_classes",
    "paint_ranks",
    "nearest_label_fill",
    "masks_without_background",
    "masks_with_background",
    "background_scores",
    "masks_mean_threshold_background",
    "pseudo_masks",
    "threshold_curve",
    "overlay",
    "heatmap_overlay",
]

MaskRule = Literal["no_background", "background_score", "mean_threshold_background"]

# Background scores t of the threshold curve (datasets with background).
DEFAULT_THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.05, 1.0, 0.05))


def _check_maps(class_maps: Tensor) -> None:
    if not isinstance(class_maps, Tensor) or class_maps.ndim != 4 or not class_maps.is_floating_point():
        shape = tuple(class_maps.shape) if isinstance(class_maps, Tensor) else type(class_maps).__name__
        raise ValueError(f"class_maps: expected a floating-point (B, C, H, W) tensor, got {shape}")


def _check_per_image(tensor: Tensor, class_maps: Tensor, name: str) -> None:
    if tensor.shape != class_maps.shape[:2]:
        raise ValueError(f"{name}: expected shape {tuple(class_maps.shape[:2])} (B, C), got {tuple(tensor.shape)}")


ClassSource = Literal["predicted", "labels"]


def select_classes(probs: Tensor, labels: Tensor | None = None, *, source: ClassSource = "predicted",
                   threshold: float = 0.5) -> Tensor:
    """Classes to draw per image: (B, C) bool.

    source="predicted": the classifier's classes (prob >= threshold). An image with no predicted
    class falls back to its most probable class: every image of the datasets holds at least one
    class, and a mask rule with no class to draw could only return an empty or arbitrary mask,
    while the top class is the classifier's best single guess.
    source="labels": the image-level `labels` unchanged (the weak supervision of the training
    split; no fallback: the labels are what they are).
    """
    if probs.ndim != 2:
        raise ValueError(f"probs: expected (B, C), got shape {tuple(probs.shape)}")
    if source == "labels":
        if labels is None:
            raise ValueError("labels: required when source='labels'")
        if labels.shape != probs.shape:
            raise ValueError(f"labels: expected shape {tuple(probs.shape)}, got {tuple(labels.shape)}")
        if not ((labels == 0) | (labels == 1)).all():
            raise ValueError("labels: image labels must be 0 or 1")
        return labels.to(probs.device).bool()
    if source != "predicted":
        raise ValueError(f"source: expected 'predicted' or 'labels', got {source!r}")
    selected = probs >= threshold
    top = probs.argmax(dim=1, keepdim=True)
    fallback = torch.zeros_like(selected).scatter_(1, top, True)
    return torch.where(selected.any(dim=1, keepdim=True), selected, fallback)


def paint_ranks(probs: Tensor, selected: Tensor) -> Tensor:
    """(B, C) painting order of the selected classes (0 = painted first), -1 for unselected.

    Ascending probability; equal probabilities keep class-index order (stable sort), so of two
    equally probable classes the higher index is painted later and wins their overlap.
    """
    order = torch.argsort(probs, dim=1, stable=True)
    positions = torch.arange(probs.shape[1], device=probs.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return torch.where(selected.bool(), ranks, torch.full_like(ranks, -1))


def _mean_threshold_paint(class_maps: Tensor, probs: Tensor, selected: Tensor) -> tuple[Tensor, Tensor]:
    """Winning class (B, H, W) and assigned mask (B, H, W) of the mean-threshold, ascending-paint rule."""
    _check_maps(class_maps)
    _check_per_image(probs, class_maps, "probs")
    _check_per_image(selected, class_maps, "selected")
    # Strictly above the mean: a flat map carries no evidence and assigns nothing.
    foreground = class_maps > class_maps.mean(dim=(2, 3), keepdim=True)
    ranks = paint_ranks(probs, selected).to(torch.int32)[:, :, None, None]
    # The last class painted over a pixel is the one with the highest rank among those covering it.
    covering = torch.where(foreground & (ranks >= 0), ranks, torch.full_like(ranks, -1))
    best_rank, winner = covering.max(dim=1)
    return winner, best_rank >= 0


def nearest_label_fill(labels: np.ndarray) -> np.ndarray:
    """Give every unassigned pixel (-1) the label of the nearest assigned pixel (Euclidean).

    (H, W) integer array in, same shape out. Equidistant candidates are resolved by scipy's
    distance transform. Raises if no pixel is assigned.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels: expected an (H, W) array, got shape {labels.shape}")
    unassigned = labels < 0
    if unassigned.all():
        raise ValueError("labels: no assigned pixel to fill from")
    if not unassigned.any():
        return labels.copy()
    rows, cols = ndimage.distance_transform_edt(unassigned, return_distances=False, return_indices=True)
    return labels[rows, cols]


def masks_without_background(class_maps: Tensor, probs: Tensor, selected: Tensor) -> Tensor:
    """Rule for datasets without background: (B, H, W) int64 labels in 0..C-1.

    Each selected map is thresholded at its spatial mean; classes are painted in ascending
    probability (ties: see `paint_ranks`); unassigned pixels take the nearest assigned label. An
    image with no selected class uses its most probable class; an image where nothing is assigned
    becomes entirely the class that would have won overlaps (the most probable selected one).
    """
    _check_maps(class_maps)
    _check_per_image(probs, class_maps, "probs")
    _check_per_image(selected, class_maps, "selected")
    selected = selected.bool()
    empty = ~selected.any(dim=1, keepdim=True)
    if empty.any():
        top = torch.zeros_like(selected).scatter_(1, probs.argmax(dim=1, keepdim=True), True)
        selected = torch.where(empty, top, selected)
    winner, assigned = _mean_threshold_paint(class_maps, probs, selected)
    if assigned.all():
        return winner
    # The distance transform runs on the CPU: one transfer out and one back for the whole batch.
    labels = torch.where(assigned, winner, torch.full_like(winner, -1)).cpu().numpy()
    favourite = paint_ranks(probs, selected).argmax(dim=1).tolist()
    for index, image in enumerate(labels):
        if (image >= 0).all():
            continue
        if (image < 0).all():
            image[...] = favourite[index]
        else:
            labels[index] = nearest_label_fill(image)
    return torch.from_numpy(labels).to(winner.device)


def _normalised_scores(class_maps: Tensor, selected: Tensor) -> Tensor:
    """Selected maps min-max normalised per image and class to [0, 1]; unselected -inf. (B, C, H, W)."""
    _check_maps(class_maps)
    _check_per_image(selected, class_maps, "selected")
    low = class_maps.amin(dim=(2, 3), keepdim=True)
    span = class_maps.amax(dim=(2, 3), keepdim=True) - low
    # A constant map has no peak: it scores 0 everywhere instead of dividing by zero.
    scores = torch.where(span > 0, (class_maps - low) / span.clamp_min(torch.finfo(span.dtype).tiny),
                         torch.zeros_like(class_maps))
    return scores.masked_fill(~selected.bool()[:, :, None, None], float("-inf"))


def masks_with_background(class_maps: Tensor, selected: Tensor, *, background_score: float) -> Tensor:
    """Rule for datasets with background: (B, H, W) int64, 0 = background, k + 1 = class k.

    argmax over [t, normalised selected maps]; ties go to the lower index, so a class must beat t
    strictly, and of two tied classes the lower index wins.
    """
    return background_scores(class_maps, selected, background_score=background_score).argmax(dim=1)


def background_scores(class_maps: Tensor, selected: Tensor, *, background_score: float) -> Tensor:
    """(B, C + 1, H, W) scores the background rule takes the argmax of: t, then the normalised maps.

    Unselected classes score -inf. Also the input of the dense CRF (`kyam_lib.crf.crf_masks`).
    """
    scores = _normalised_scores(class_maps, selected)
    background = torch.full_like(scores[:, :1], float(background_score))
    return torch.cat([background, scores], dim=1)


def masks_mean_threshold_background(class_maps: Tensor, probs: Tensor, selected: Tensor) -> Tensor:
    """Mean threshold and ascending paint, unassigned = background: (B, H, W) int64, 0 = background, k + 1 = class k."""
    winner, assigned = _mean_threshold_paint(class_maps, probs, selected.bool())
    return torch.where(assigned, winner + 1, torch.zeros_like(winner))


def pseudo_masks(class_maps: Tensor, probs: Tensor, selected: Tensor, *, rule: MaskRule,
                 background_score: float | None = None) -> Tensor:
    """Dispatch to one of the three rules by name (for configs)."""
    if rule == "no_background":
        return masks_without_background(class_maps, probs, selected)
    if rule == "background_score":
        if background_score is None:
            raise ValueError("background_score: required for rule 'background_score'")
        return masks_with_background(class_maps, selected, background_score=background_score)
    if rule == "mean_threshold_background":
        return masks_mean_threshold_background(class_maps, probs, selected)
    raise ValueError(f"rule: expected one of {MaskRule.__args__}, got {rule!r}")


def threshold_curve(class_maps: Tensor, selected: Tensor, targets: Tensor, thresholds: Sequence[float],
                    num_classes: int, *, ignore_index: int | None = 255) -> Tensor:
    """Confusion matrices of `masks_with_background` for many background scores at once.

    Returns (T, K, K) int64 (rows = target, columns = prediction), K = num_classes = C + 1;
    entry [j] equals the confusion matrix of `masks_with_background(..., background_score=thresholds[j])`.
    The maps are normalised once; each pixel's best class and score are found once, and a pixel is
    that class for every t below its score and background otherwise, so one histogram over
    (target, best class, threshold bin) yields every matrix.
    """
    scores = _normalised_scores(class_maps, selected)
    batch, num_maps, height, width = scores.shape
    if num_classes != num_maps + 1:
        raise ValueError(f"num_classes: expected C + 1 = {num_maps + 1} (background + classes), got {num_classes}")
    if targets.shape != (batch, height, width):
        raise ValueError(f"targets: expected shape {(batch, height, width)}, got {tuple(targets.shape)}")
    if len(thresholds) == 0:
        raise ValueError("thresholds: expected at least one background score")
    device = scores.device
    targets = targets.to(device)
    valid = valid_pixels(targets, num_classes=num_classes, ignore_index=ignore_index, name="targets")

    best_score, best_class = scores.max(dim=1)
    best_score, best_class, target = best_score[valid], best_class[valid], targets[valid].long()
    values = torch.as_tensor(list(thresholds), dtype=torch.float64, device=device)
    sorted_values, order = torch.sort(values)
    # bins[i] = number of thresholds strictly below the pixel's score: it is foreground for those.
    bins = torch.bucketize(best_score.double(), sorted_values, right=False)
    num_t = len(values)
    pair = target * num_maps + best_class
    hist = torch.bincount(pair * (num_t + 1) + bins, minlength=num_classes * num_maps * (num_t + 1))
    hist = hist.reshape(num_classes, num_maps, num_t + 1)
    # Pixels foreground at sorted threshold j: those whose bin exceeds j (reverse cumulative sum).
    above = hist.flip(-1).cumsum(-1).flip(-1)[..., 1:]  # (K, C, T)
    curve = torch.zeros(num_t, num_classes, num_classes, dtype=torch.int64, device=device)
    curve[:, :, 1:] = above.permute(2, 0, 1)
    totals = torch.bincount(target, minlength=num_classes)
    curve[:, :, 0] = totals[None, :] - curve[:, :, 1:].sum(-1)
    return curve[torch.argsort(order)]


def _to_numpy(array: Tensor | np.ndarray) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)


def _check_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != shape:
        raise ValueError(f"image: expected ({shape[0]}, {shape[1]}, 3) matching the mask, got {image.shape}")
    return image


def overlay(image: Tensor | np.ndarray, mask: Tensor | np.ndarray, *, alpha: float = 0.5,
            palette: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Blend palette colours of an (H, W) mask over an (H, W, 3) image in [0, 1]; returns (H, W, 3) float."""
    labels = _to_numpy(mask)
    if labels.ndim != 2:
        raise ValueError(f"mask: expected (H, W), got shape {labels.shape}")
    picture = _check_image(_to_numpy(image), labels.shape)
    colours = np.zeros((256, 3))
    flat = np.asarray(flat_colours(palette), dtype=np.float64)
    colours.flat[:len(flat)] = flat / 255.0
    return (1.0 - alpha) * picture + alpha * colours[labels.astype(np.int64)]


def heatmap_overlay(image: Tensor | np.ndarray, class_map: Tensor | np.ndarray, alpha: float = 0.5,
                    *, cmap: str = "jet") -> np.ndarray:
    """Blend an (H, W) class map, min-max normalised and coloured by `cmap`, over an (H, W, 3) image."""
    import matplotlib  # plotting is only needed for figures

    heat = _to_numpy(class_map).astype(np.float64)
    if heat.ndim != 2:
        raise ValueError(f"class_map: expected (H, W), got shape {heat.shape}")
    picture = _check_image(_to_numpy(image), heat.shape)
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colours = matplotlib.colormaps[cmap](heat)[..., :3]
    return (1.0 - alpha) * picture + alpha * colours
