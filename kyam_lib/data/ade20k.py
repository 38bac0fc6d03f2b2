"""ADE20K scene parsing (ADEChallengeData2016): 150 classes, mask value 0 = "other".

Default ``other_as_class=True``: "other" is class 0 of 151 and there is no background, the way
the paper's protocol treats ADE20K (no-background pseudo-mask rule, 151 classes in Table 7).
``other_as_class=False``: 150 classes and mask 0 is background. The mask values are the same
either way; only their meaning and the label vector change.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import DatasetError, KyamDataset, find_root, read_index_png, read_rgb
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ADE20K_CLASSES", "ADE20K_LAYOUT", "ADE20KDataset", "resolve_ade20k_root"]

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)

ADE20K_LAYOUT = """\
  <root>/                                   ADEChallengeData2016
    images/training/ADE_train_<n>.jpg       (validation/ADE_val_<n>.jpg)
    annotations/training/ADE_train_<n>.png  greyscale: 0 = other, 1..150 classes
    objectInfo150.csv                       optional: class names (Idx,Ratio,Train,Val,Name)
"""
_CANDIDATES = ("", "ADEChallengeData2016", "ade20k", "ade20k/ADEChallengeData2016", "ADE20K")
_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def resolve_ade20k_root(root: str | Path) -> Path:
    """The ADEChallengeData2016 folder at or below `root` (see `ADE20K_LAYOUT`)."""
    return find_root(root, _CANDIDATES, ("images", "annotations"), dataset="ade20k", layout=ADE20K_LAYOUT)


def _read_object_info(path: Path) -> list[str]:
    """The 150 names of objectInfo150.csv (first synonym of each "a;b;c" entry), in Idx order."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        rows.sort(key=lambda r: int(r["Idx"]))
        names = [r["Name"].split(";")[0].strip() for r in rows]
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: expected columns Idx,...,Name with integer Idx ({err})") from err
    if len(names) != len(ADE20K_CLASSES):
        raise DatasetError(f"{path}: lists {len(names)} classes, expected {len(ADE20K_CLASSES)}")
    return names


class ADE20KDataset(KyamDataset):
    """ADE20K; `split` in train / val (or the folder names training / validation)."""

    name = "ade20k"

    def __init__(self, root: str | Path, split: str = "train", *, other_as_class: bool = True,
                 image_size: int | tuple[int, int] | None = None, augment: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        root = resolve_ade20k_root(root)
        if split not in _SPLITS:
            raise ValueError(f"ade20k: split must be one of {sorted(_SPLITS)}, got {split!r}")
        folder = _SPLITS[split]
        self._image_dir = root / "images" / folder
        self._mask_dir = root / "annotations" / folder
        if not self._image_dir.is_dir():
            raise DatasetError(f"{self._image_dir}: split folder not found; expected layout:\n{ADE20K_LAYOUT}")
        ids = sorted(p.stem for p in self._image_dir.glob("*.jpg"))
        info = root / "objectInfo150.csv"
        names = _read_object_info(info) if info.is_file() else list(ADE20K_CLASSES)
        class_names = ["other", *names] if other_as_class else names
        super().__init__(root=root, split=split, ids=ids, class_names=class_names, has_background=not other_as_class,
                         num_channels=3, multi_label=True, image_size=image_size, augment=augment, mean=mean, std=std)

    def _image_path(self, index: int) -> Path:
        return self._image_dir / f"{self.ids[index]}.jpg"

    def _mask_path(self, index: int) -> Path:
        return self._mask_dir / f"{self.ids[index]}.png"

    def _read_image(self, index: int) -> np.ndarray:
        return read_rgb(self._image_path(index))

    def _read_mask(self, index: int) -> np.ndarray:
        mask = read_index_png(self._mask_path(index))
        if mask.ndim != 2:
            raise DatasetError(f"{self._mask_path(index)}: expected a greyscale class-index PNG, got RGB")
        return mask
