"""Scores of one split, accumulated group by group of equal-sized images: the background t-curve,
the mask rules, optional dense CRF, and the files written on the way (palette PNGs, map files).

Used for kyam's own runs (`kyam_lib.evaluate`) and for other methods' class maps
(`kyam_lib.score`): the rules and the curve are the same code, so their numbers compare.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kyam_lib.crf import CRFParams, crf_masks
from kyam_lib.data.palette import palette
from kyam_lib.interop import MapFormat, write_class_maps
from kyam_lib.method.metrics import ConfusionMatrix
from kyam_lib.masks_io import save_pseudo_mask
from kyam_lib.method.pseudo_masks import (background_scores, masks_mean_threshold_background, masks_with_background,
                                   masks_without_background, threshold_curve)

__all__ = ["SplitScorer"]


class SplitScorer:
    """Accumulates the confusion matrices of one split.

    With background: the (T, K, K) curve over `thresholds` and the mean-threshold rule always;
    with `background_score`, the masks at that t (written to `mask_dir`), and with `crf` their
    CRF-refined version (written to `crf_dir`). Without background: the mean-threshold rule with
    nearest-label fill. `export` writes each image's maps of its selected classes to `maps_dir`.
    """

    def __init__(self, *, num_classes: int, has_background: bool, thresholds: Sequence[float],
                 background_score: float | None = None, mask_dir: Path | None = None,
                 crf: CRFParams | None = None, crf_dir: Path | None = None,
                 export: MapFormat | None = None, maps_dir: Path | None = None):
        self.num_mask_classes = num_classes + int(has_background)
        self.has_background = has_background
        self.thresholds = tuple(thresholds)
        self.background_score = background_score
        self.mask_dir, self.crf_dir, self.maps_dir = mask_dir, crf_dir, maps_dir
        self.crf = crf if has_background and background_score is not None else None
        self.export = export
        K = self.num_mask_classes
        self.curve = torch.zeros(len(self.thresholds), K, K, dtype=torch.int64)
        self.main_cm, self.mean_threshold_cm, self.crf_cm = ConfusionMatrix(K), ConfusionMatrix(K), ConfusionMatrix(K)
        self.crf_seconds = 0.0
        self.images = 0

    @property
    def scored(self) -> bool:
        """Whether `main_cm` holds the split's scores (with background it needs a chosen t)."""
        return self.background_score is not None or not self.has_background

    def add(self, maps: Tensor, probs: Tensor, selected: Tensor, targets: Tensor, ids: Sequence[str],
            raw_images: Sequence[np.ndarray] | None = None) -> None:
        """maps (n, C, H, W) max-normalised, probs/selected (n, C), targets (n, H, W), one size per call."""
        self.images += len(ids)
        if self.export is not None and self.maps_dir is not None:
            for image_maps, chosen, image_id in zip(maps.cpu(), selected.cpu(), ids):
                classes = chosen.nonzero().flatten().tolist()
                write_class_maps(self.maps_dir / f"{image_id}.npy", image_maps[classes], classes, self.export)
        masks = None
        if self.has_background:
            self.curve += threshold_curve(maps, selected, targets, self.thresholds, self.num_mask_classes).cpu()
            self.mean_threshold_cm.update(masks_mean_threshold_background(maps, probs, selected), targets)
            if self.background_score is not None:
                masks = masks_with_background(maps, selected, background_score=self.background_score)
                self.main_cm.update(masks, targets)
                if self.crf is not None:
                    self._add_crf(maps, selected, targets, ids, raw_images)
        else:
            masks = masks_without_background(maps, probs, selected)
            self.main_cm.update(masks, targets)
        if self.mask_dir is not None and masks is not None:
            _write_masks(masks, ids, self.mask_dir)

    def _add_crf(self, maps: Tensor, selected: Tensor, targets: Tensor, ids: Sequence[str],
                 raw_images: Sequence[np.ndarray] | None) -> None:
        if raw_images is None:
            raise ValueError("raw_images: the dense CRF needs the original images")
        scores = background_scores(maps, selected, background_score=self.background_score)
        started = time.perf_counter()
        refined = torch.stack([crf_masks(image, image_scores, self.crf)
                               for image, image_scores in zip(raw_images, scores)])
        self.crf_seconds += time.perf_counter() - started
        self.crf_cm.update(refined, targets)
        if self.crf_dir is not None:
            _write_masks(refined, ids, self.crf_dir)


def _write_masks(masks: Tensor, ids: Sequence[str], folder: Path) -> None:
    for image_id, mask in zip(ids, masks.cpu().numpy()):
        save_pseudo_mask(mask.astype(np.uint8), folder / f"{image_id}.png", palette(256))
