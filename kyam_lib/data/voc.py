"""PASCAL VOC 2012 (+ SBD SegmentationClassAug), and any folder in VOC layout with a labelmap.txt.

Masks are palette-index PNGs: 0 = background, k = class k, 255 = void (ignored). RGB label
PNGs, as some annotation tools export them, are mapped back through the labelmap colours.
Image labels are the classes present in the mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .base import (IGNORE_INDEX, DatasetError, DatasetNotFoundError, KyamDataset, find_root, read_index_png,
                   read_rgb, read_split_file, seeded_split)
from .palette import palette
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["VOC_CLASSES", "VOC_LAYOUT", "VOCDataset", "read_labelmap", "resolve_voc_root"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_VOID_COLOUR = (224, 224, 192)

VOC_LAYOUT = """\
  <root>/                                  e.g. VOCdevkit/VOC2012, or your own data
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png             palette or greyscale PNG: 0 background, k class k, 255 void
    SegmentationClassAug/<id>.png          optional (SBD): enables split "train_aug"
    ImageSets/Segmentation/train.txt       one id per line (also val.txt, trainval.txt)
    labelmap.txt                           optional: "name:r,g,b::" per line, background first
"""
_CANDIDATES = ("", "VOC2012", "VOCdevkit/VOC2012", "voc", "voc/VOC2012", "voc/VOCdevkit/VOC2012")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def resolve_voc_root(root: str | Path) -> Path:
    """The VOC-layout folder at or below `root` (see `VOC_LAYOUT`)."""
    return find_root(root, _CANDIDATES, ("JPEGImages", "ImageSets/Segmentation"), dataset="voc", layout=VOC_LAYOUT)


def read_labelmap(path: Path) -> tuple[list[str], list[tuple[int, int, int] | None]]:
    """Names and colours of a ``labelmap.txt`` ("name:r,g,b:parts:actions" or "name" per line)."""
    names, colours = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        name = fields[0].strip()
        if not name:
            raise DatasetError(f"{path}:{number}: empty class name")
        colour = None
        if len(fields) > 1 and fields[1].strip():
            try:
                colour = tuple(int(c) for c in fields[1].split(","))
            except ValueError as err:
                raise DatasetError(f"{path}:{number}: colour {fields[1]!r} is not 'r,g,b'") from err
            if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
                raise DatasetError(f"{path}:{number}: colour {fields[1]!r} is not 'r,g,b' in 0..255")
        if name in names:
            raise DatasetError(f"{path}:{number}: class {name!r} listed twice")
        names.append(name)
        colours.append(colour)
    if not names:
        raise DatasetError(f"{path}: labelmap lists no classes")
    return names, colours


class VOCDataset(KyamDataset):
    """A VOC-layout dataset; `split` in train / val / trainval / train_aug (or any ImageSets file).

    Classes come from ``labelmap.txt`` when present (a first entry "background" means mask 0
    is background), else the 20 VOC classes. split_mode="official_random" replaces the
    standard split by a seeded random `train_fraction` / rest partition of trainval.
    """

    name = "voc"

    def __init__(self, root: str | Path, split: str = "train", *, image_size: int | tuple[int, int] | None = None,
                 augment: bool = False, split_mode: Literal["standard", "official_random"] = "standard",
                 split_seed: int = 0, train_fraction: float = 0.7, labelmap: str | Path | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        root = resolve_voc_root(root)
        labelmap_path = Path(labelmap) if labelmap is not None else root / "labelmap.txt"
        if labelmap is not None and not labelmap_path.is_file():
            raise DatasetNotFoundError(f"{labelmap_path}: labelmap file not found")
        if labelmap_path.is_file():
            names, colours = read_labelmap(labelmap_path)
        else:
            names, colours = ["background", *VOC_CLASSES], [None] * (len(VOC_CLASSES) + 1)
        has_background = names[0].lower() == "background"
        class_names = names[1:] if has_background else names
        self._colour_table = self._make_colour_table(colours)

        sets = root / "ImageSets" / "Segmentation"
        self._mask_dir = root / "SegmentationClass"
        if split_mode == "official_random":
            trainval = sets / "trainval.txt"
            all_ids = (read_split_file(trainval) if trainval.is_file()
                       else read_split_file(sets / "train.txt") + read_split_file(sets / "val.txt"))
            ids = seeded_split(sorted(set(all_ids)), split, seed=split_seed, train_fraction=train_fraction)
        elif split_mode != "standard":
            raise ValueError(f"split_mode must be 'standard' or 'official_random', got {split_mode!r}")
        elif split == "train_aug":
            ids = self._train_aug_ids(root, sets)
            self._mask_dir = root / "SegmentationClassAug"
        else:
            ids = read_split_file(sets / f"{split}.txt")
        self._image_dir = root / "JPEGImages"
        super().__init__(root=root, split=split, ids=ids, class_names=class_names, has_background=has_background,
                         num_channels=3, multi_label=True, image_size=image_size, augment=augment, mean=mean, std=std)

    @staticmethod
    def _train_aug_ids(root: Path, sets: Path) -> list[str]:
        """The SBD-augmented training list: train_aug.txt, else every SegmentationClassAug mask not in val."""
        listed = sets / "train_aug.txt"
        if listed.is_file():
            return read_split_file(listed)
        aug_dir = root / "SegmentationClassAug"
        if not aug_dir.is_dir():
            raise DatasetNotFoundError(
                f"{aug_dir}: split 'train_aug' needs the SBD masks in SegmentationClassAug/ "
                f"(or a list in {listed})")
        val = set(read_split_file(sets / "val.txt"))
        ids = sorted(p.stem for p in aug_dir.glob("*.png") if p.stem not in val)
        if not ids:
            raise DatasetError(f"{aug_dir}: no masks outside the val split")
        return ids

    def _make_colour_table(self, colours: list) -> dict[int, int]:
        """Packed RGB → mask value, for RGB label images: labelmap colours, else the VOC palette."""
        if all(c is not None for c in colours):
            table = {(r << 16) | (g << 8) | b: k for k, (r, g, b) in enumerate(colours)}
        else:
            voc = palette(256)[: len(colours)].astype(np.int64)
            table = {int((r << 16) | (g << 8) | b): k for k, (r, g, b) in enumerate(voc)}
        for r, g, b in (VOC_VOID_COLOUR, (255, 255, 255)):
            table.setdefault((r << 16) | (g << 8) | b, IGNORE_INDEX)
        return table

    def _image_path(self, index: int) -> Path:
        stem = self._image_dir / self.ids[index]
        for suffix in _IMAGE_SUFFIXES:
            path = stem.with_name(stem.name + suffix)
            if path.is_file():
                return path
        return stem.with_name(stem.name + ".jpg")

    def _mask_path(self, index: int) -> Path:
        return self._mask_dir / f"{self.ids[index]}.png"

    def _read_image(self, index: int) -> np.ndarray:
        return read_rgb(self._image_path(index))

    def _read_mask(self, index: int) -> np.ndarray:
        path = self._mask_path(index)
        mask = read_index_png(path)
        if mask.ndim == 3:
            packed = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2]
            values, inverse = np.unique(packed, return_inverse=True)
            unknown = [int(v) for v in values if int(v) not in self._colour_table]
            if unknown:
                shown = [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in unknown[:5]]
                raise DatasetError(f"{path}: RGB label colour(s) {shown} are not in the class list")
            mapped = np.array([self._colour_table[int(v)] for v in values], dtype=np.int64)
            mask = mapped[inverse.reshape(packed.shape)]
        return mask
