"""Segmentation data: a kyam dataset whose training masks are replaced by a folder of pseudo-masks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors

from ..data import IGNORE_INDEX, DatasetError, DatasetNotFoundError, KyamDataset
from ..masks_io import load_mask_png
from ..run_data import dataset_info, open_split
from .config import GROUND_TRUTH, SegConfig

__all__ = ["PseudoMaskDataset", "build_seg_datasets", "mask_class_names"]


class PseudoMaskDataset(Dataset):
    """A kyam dataset whose masks are replaced by ``<mask_dir>/<id>.png`` pseudo-masks.

    Images, labels and the joint transforms are those of `dataset`; the pseudo-mask goes through
    the same transform as the image (same crop, same flip). A pseudo-mask of another size than its
    image (evaluation writes them at the classifier's input size) is first resized to the image
    with nearest, undoing the plain resize it was made at.
    """

    def __init__(self, dataset: KyamDataset, mask_dir: str | os.PathLike) -> None:
        self.dataset = dataset
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise DatasetNotFoundError(f"{self.mask_dir}: pseudo-mask folder not found")
        self.class_names = dataset.class_names
        self.has_background = dataset.has_background
        self.num_channels = dataset.num_channels
        self.multi_label = dataset.multi_label
        self.ids = dataset.ids

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_mask_classes(self) -> int:
        return self.dataset.num_mask_classes

    def mask_path(self, index: int) -> Path:
        return self.mask_dir / f"{self.dataset.ids[index]}.png"

    def missing(self, indices: Sequence[int] | None = None) -> list[Path]:
        """Pseudo-mask files that do not exist, for `indices` (default: every item)."""
        indices = range(len(self)) if indices is None else indices
        return [path for path in map(self.mask_path, indices) if not path.is_file()]

    def read_mask(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        """The checked (H, W) int64 pseudo-mask of item `index`, at image size `shape`."""
        path = self.mask_path(index)
        if not path.is_file():
            raise DatasetNotFoundError(f"{path}: pseudo-mask file not found for image id {self.dataset.ids[index]!r}")
        try:
            mask = load_mask_png(path)
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: unreadable pseudo-mask ({err})") from err
        bad = (mask >= self.num_mask_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            values = sorted(int(v) for v in np.unique(mask[bad]))[:10]
            raise DatasetError(f"{path}: pseudo-mask value(s) {values} outside the class list "
                               f"(valid: 0..{self.num_mask_classes - 1} and {IGNORE_INDEX})")
        if mask.shape != tuple(shape):
            resized = Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
            mask = np.asarray(resized)
        return mask.astype(np.int64)

    def __getitem__(self, index: int) -> dict:
        base = self.dataset
        image, gt_mask = base.load(index)
        labels = base.image_labels(index, gt_mask)  # image-level labels: the weak supervision itself
        mask = self.read_mask(index, image.shape[:2])
        size = base.image_size or mask.shape
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        mask_t = tv_tensors.Mask(torch.from_numpy(mask))
        image_t, mask_t = base.transform_for(tuple(size))(image_t, mask_t)
        return {
            "image": image_t.as_subclass(Tensor).float(),
            "mask": mask_t.as_subclass(Tensor).long(),
            "labels": torch.from_numpy(labels),
            "id": base.ids[index],
            "index": index,
        }


def build_seg_datasets(cfg: SegConfig) -> tuple[Dataset, Dataset]:
    """(train, val): train masks from `cfg.masks`, val masks always ground truth."""
    pseudo_masks = None if cfg.masks == GROUND_TRUTH else (lambda dataset: PseudoMaskDataset(dataset, cfg.masks))
    train_set = open_split(cfg, cfg.train_split, augment=cfg.augment, limit=cfg.max_train_images, wrap=pseudo_masks)
    if cfg.masks != GROUND_TRUTH:
        pseudo = dataset_info(train_set)  # the PseudoMaskDataset under the Subset
        missing = pseudo.missing(train_set.indices if isinstance(train_set, Subset) else None)
        if missing:
            raise DatasetNotFoundError(
                f"{missing[0]}: pseudo-mask file not found ({len(missing)} of {len(train_set)} training images "
                f"of split {cfg.train_split!r} have none in {pseudo.mask_dir})")
    return train_set, open_split(cfg, cfg.val_split, limit=cfg.max_val_images)


def mask_class_names(dataset: Dataset) -> list[str]:
    """Names of the mask values 0..K-1: "background" first where the dataset has one."""
    info = dataset_info(dataset)
    return (["background"] if info.has_background else []) + list(info.class_names)


