"""The dataset base class and the file readers every loader shares.

Every loader yields the same item, a dict:

- ``image``  float32 (C, H, W), normalised (constants in `kyam_lib.data.transforms`)
- ``mask``   int64 (H, W); 255 = ignore. With background, 0 = background and k + 1 =
  ``class_names[k]``; without, k = ``class_names[k]``.
- ``labels`` float32 (K,) multi-hot (one-hot for single-label datasets), computed from the
  untransformed mask unless the dataset has image-level labels of its own.
- ``id`` str, ``index`` int (the dataset index, used to seed per-sample randomness).

Bad input raises `DatasetError` naming the file and the problem, never a bare PIL/numpy error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors

from .transforms import build_transform

__all__ = [
    "seeded_subset",
    "DatasetError",
    "DatasetNotFoundError",
    "IGNORE_INDEX",
    "KyamDataset",
    "find_root",
    "read_rgb",
    "read_index_png",
    "read_split_file",
    "labels_from_mask",
    "seeded_split",
]

IGNORE_INDEX = 255


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset root or file does not exist; the message shows what was expected."""


def find_root(root: str | Path, candidates: Sequence[str], markers: Sequence[str], *,
              dataset: str, layout: str) -> Path:
    """The first of `root / candidate` that contains all `markers`.

    Lets a user pass either the dataset folder itself or the data root above it.
    """
    root = Path(root).expanduser()
    looked = []
    for candidate in candidates:
        path = root / candidate if candidate else root
        looked.append(path)
        if all((path / marker).exists() for marker in markers):
            return path
    looked_in = "\n".join(f"  {p}" for p in looked)
    raise DatasetNotFoundError(
        f"{dataset}: dataset not found under {root}. Looked in:\n{looked_in}\n"
        f"Expected layout:\n{layout.rstrip()}"
    )


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8, naming the file when it is missing or corrupt."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: corrupt or truncated image ({err})") from err


def read_index_png(path: Path) -> np.ndarray:
    """A label image whose pixel values are class indices (palette or greyscale PNG) → (H, W) int64.

    RGB label images are returned as (H, W, 3) uint8 so that the caller can map colours.
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: mask file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA"):
                return np.asarray(img.convert("RGB"))
            if img.mode not in ("P", "L", "I", "I;16", "1"):
                raise DatasetError(f"{path}: unsupported mask mode {img.mode!r} "
                                   "(expected a palette, greyscale or RGB PNG)")
            return np.asarray(img).astype(np.int64)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: corrupt or truncated mask ({err})") from err


def read_split_file(path: Path) -> list[str]:
    """Image ids listed one per line (first token; directories and extensions stripped)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: split file not found")
    ids = []
    for line in path.read_text().splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        # The SBD/DeepLab list format is "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png".
        ids.append(Path(tokens[0]).stem)
    if not ids:
        raise DatasetError(f"{path}: split file is empty")
    return ids


def labels_from_mask(mask: np.ndarray, *, num_classes: int, has_background: bool,
                     min_fraction: float = 0.0) -> np.ndarray:
    """Multi-hot (K,) float32: classes covering more than `min_fraction` of the valid pixels.

    `min_fraction` = 0 means any pixel; DFC2020 uses 0.1 (a class must cover 10 %).
    """
    offset = 1 if has_background else 0
    valid = mask[mask != IGNORE_INDEX]
    counts = np.bincount(valid.ravel(), minlength=num_classes + offset)[offset:offset + num_classes]
    if min_fraction > 0:
        present = counts >= min_fraction * max(valid.size, 1)
        present &= counts > 0
    else:
        present = counts > 0
    return present.astype(np.float32)


def seeded_split(ids: Sequence[str], split: str, *, seed: int, train_fraction: float) -> list[str]:
    """A seeded random train/val partition of `ids` (sorted first, so the file order is irrelevant)."""
    if split not in ("train", "val"):
        raise ValueError(f"random split: split must be 'train' or 'val', got {split!r}")
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    cut = int(round(train_fraction * len(ordered)))
    chosen = order[:cut] if split == "train" else order[cut:]
    return [ordered[i] for i in sorted(chosen)]


class KyamDataset(Dataset):
    """Base class: subclasses implement `_read_image`, `_read_mask` and the two `_*_path` hooks.

    Attributes: `class_names` (the K classes `labels` indexes, never "background"),
    `has_background`, `num_channels`, `multi_label`, `ids`, `root`, `split`.
    """

    name: str = "dataset"

    def __init__(self, *, root: Path, split: str, ids: list[str], class_names: Sequence[str],
                 has_background: bool, num_channels: int, multi_label: bool,
                 image_size: int | tuple[int, int] | None, augment: bool,
                 mean: Sequence[float], std: Sequence[float], label_min_fraction: float = 0.0):
        if not ids:
            raise DatasetError(f"{root}: split {split!r} has no images")
        if len(mean) != num_channels or len(std) != num_channels:
            raise ValueError(f"{len(mean)} normalisation constants for {num_channels} channels")
        self.root = Path(root)
        self.split = split
        self.ids = list(ids)
        self.class_names = list(class_names)
        self.has_background = has_background
        self.num_channels = num_channels
        self.multi_label = multi_label
        self.image_size = _as_size(image_size)
        self.augment = augment
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.label_min_fraction = label_min_fraction
        self._transforms: dict[tuple[int, int], object] = {}

    # -- hooks -------------------------------------------------------------------------------
    def _read_image(self, index: int) -> np.ndarray:
        """(H, W, C) uint8 RGB or float32 multispectral, before normalisation."""
        raise NotImplementedError

    def _read_mask(self, index: int) -> np.ndarray:
        """(H, W) int64 in the mask coding of the class docstring (values not yet checked)."""
        raise NotImplementedError

    def _image_path(self, index: int) -> Path:
        raise NotImplementedError

    def _mask_path(self, index: int) -> Path:
        raise NotImplementedError

    def _image_level_labels(self, index: int) -> np.ndarray | None:
        """Labels the dataset states itself (e.g. class folders); None = derive from the mask."""
        return None

    def _display(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) for figures; RGB data is shown as is."""
        return image

    # -- public ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_mask_classes(self) -> int:
        """Distinct mask values besides 255: K + 1 with background, else K."""
        return self.num_classes + (1 if self.has_background else 0)

    def __len__(self) -> int:
        return len(self.ids)

    def read_mask(self, index: int) -> np.ndarray:
        """The checked, untransformed (H, W) int64 mask of item `index`."""
        mask = self._read_mask(index)
        bad = (mask >= self.num_mask_classes) & (mask != IGNORE_INDEX) | (mask < 0)
        if bad.any():
            values = sorted(int(v) for v in np.unique(mask[bad]))[:10]
            raise DatasetError(
                f"{self._mask_path(index)}: label value(s) {values} outside the class list "
                f"(valid: 0..{self.num_mask_classes - 1} and {IGNORE_INDEX})"
            )
        return mask

    def image_labels(self, index: int, mask: np.ndarray | None = None) -> np.ndarray:
        """(K,) float32 image labels of item `index`."""
        labels = self._image_level_labels(index)
        if labels is not None:
            return labels
        if mask is None:
            mask = self.read_mask(index)
        return labels_from_mask(mask, num_classes=self.num_classes, has_background=self.has_background,
                                min_fraction=self.label_min_fraction)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Checked, untransformed (image (H, W, C), mask (H, W) int64)."""
        image = self._read_image(index)
        mask = self.read_mask(index)
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                f"{self._mask_path(index)}: mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                f"image size {image.shape[1]}x{image.shape[0]} of {self._image_path(index)}"
            )
        if image.ndim != 3 or image.shape[2] != self.num_channels:
            raise DatasetError(f"{self._image_path(index)}: expected {self.num_channels} channels, "
                               f"got shape {image.shape}")
        return image, mask

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) for display — uint8 RGB or float in [0, 1], mask (H, W) int64), untransformed."""
        image, mask = self.load(index)
        return self._display(image), mask

    def transform_for(self, size: tuple[int, int]):
        if size not in self._transforms:
            self._transforms[size] = build_transform(image_size=size, augment=self.augment,
                                                     mean=self.mean, std=self.std)
        return self._transforms[size]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} images")
        image, mask = self.load(index)
        return self.make_item(index, image, mask, self.image_labels(index, mask))

    def make_item(self, index: int, image: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> dict:
        """Transform an (H, W, C) image and its (H, W) mask jointly into a training item.

        Subclasses and wrappers (e.g. pseudo-mask substitution) call it with another mask.
        """
        size = self.image_size or mask.shape
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        # uint8 masks take the native nearest resize; int64 ones go through a float round trip
        # that is two orders of magnitude slower on CPU. Every mask coding here fits in 0..255.
        mask_t = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask.astype(np.uint8, copy=False))))
        image_t, mask_t = self.transform_for(tuple(size))(image_t, mask_t)
        return {
            "image": image_t.as_subclass(torch.Tensor).float(),
            "mask": mask_t.as_subclass(torch.Tensor).long(),
            "labels": torch.from_numpy(labels),
            "id": self.ids[index],
            "index": index,
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"classes={self.num_classes}, background={self.has_background}, "
                f"channels={self.num_channels})")


def _as_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def seeded_subset(dataset: Dataset, limit: int, seed: int) -> Dataset:
    """The first `limit` images of one seeded permutation, in index order (all of them for limit <= 0).

    The one subset rule of training, evaluation and segmentation: for one seed they see the same
    images, and a smaller cap keeps a subset of a larger one's images.
    """
    if limit <= 0 or limit >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    return Subset(dataset, sorted(order.tolist()))
