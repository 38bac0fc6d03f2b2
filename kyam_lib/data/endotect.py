"""EndoTect / HyperKvasir labelled images: single-label classification, polyp masks where they exist.

Each image's class is its folder. With a mask in ``segmented-images/masks`` (white = polyp),
the mask is 0 = background and the image's class elsewhere; images without one are all 255
(unknown). Classes are the 23 of HyperKvasir's labelled set (Table 7) in alphabetical order,
or the 16 lower-GI classes with subset="lower-gi". The split is a seeded 70/30 partition.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from .base import IGNORE_INDEX, DatasetError, KyamDataset, find_root, read_rgb, seeded_split
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ENDOTECT_CLASSES", "ENDOTECT_LOWER_GI_CLASSES", "ENDOTECT_LAYOUT", "EndoTectDataset",
           "resolve_endotect_root"]

ENDOTECT_LOWER_GI_CLASSES = tuple(sorted((
    "cecum", "ileum", "retroflex-rectum",                                        # anatomical landmarks
    "hemorrhoids", "polyps", "ulcerative-colitis-grade-0-1", "ulcerative-colitis-grade-1",
    "ulcerative-colitis-grade-1-2", "ulcerative-colitis-grade-2", "ulcerative-colitis-grade-2-3",
    "ulcerative-colitis-grade-3",                                                # pathological findings
    "bbps-0-1", "bbps-2-3", "impacted-stool",                                    # quality of mucosal views
    "dyed-lifted-polyps", "dyed-resection-margins",                              # therapeutic interventions
)))
_UPPER_GI_CLASSES = ("pylorus", "retroflex-stomach", "z-line",
                     "barretts", "barretts-short-segment", "esophagitis-a", "esophagitis-b-d")
ENDOTECT_CLASSES = tuple(sorted(ENDOTECT_LOWER_GI_CLASSES + _UPPER_GI_CLASSES))

ENDOTECT_LAYOUT = """\
  <root>/                                                       hyper-kvasir
    labeled-images/lower-gi-tract/<category>/<class>/<name>.jpg  e.g. .../pathological-findings/polyps/
    labeled-images/upper-gi-tract/<category>/<class>/<name>.jpg
    segmented-images/masks/<name>.jpg                            optional polyp masks, white = polyp
"""
_CANDIDATES = ("", "hyper-kvasir", "hyperkvasir", "endotect", "EndoTect")


def resolve_endotect_root(root: str | Path) -> Path:
    """The HyperKvasir folder at or below `root` (see `ENDOTECT_LAYOUT`)."""
    return find_root(root, _CANDIDATES, ("labeled-images",), dataset="endotect", layout=ENDOTECT_LAYOUT)


class EndoTectDataset(KyamDataset):
    """HyperKvasir labelled images; `split` in train / val (seeded `train_fraction` partition)."""

    name = "endotect"

    def __init__(self, root: str | Path, split: str = "train", *, subset: Literal["all", "lower-gi"] = "all",
                 split_seed: int = 0, train_fraction: float = 0.7,
                 image_size: int | tuple[int, int] | None = None, augment: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        root = resolve_endotect_root(root)
        if subset not in ("all", "lower-gi"):
            raise ValueError(f"endotect: subset must be 'all' or 'lower-gi', got {subset!r}")
        class_names = ENDOTECT_CLASSES if subset == "all" else ENDOTECT_LOWER_GI_CLASSES
        labelled = root / "labeled-images"
        paths: dict[str, Path] = {}
        for path in sorted(labelled.rglob("*.jpg")):
            folder = path.parent.name
            if folder not in ENDOTECT_CLASSES:
                raise DatasetError(f"{path.parent}: class folder {folder!r} is not one of the "
                                   f"{len(ENDOTECT_CLASSES)} HyperKvasir classes")
            if subset == "lower-gi" and "lower-gi-tract" not in path.relative_to(labelled).parts:
                continue
            if path.stem in paths:
                raise DatasetError(f"{path}: image name also used by {paths[path.stem]}")
            paths[path.stem] = path
        if not paths:
            raise DatasetError(f"{labelled}: no .jpg images; expected layout:\n{ENDOTECT_LAYOUT}")
        ids = seeded_split(list(paths), split, seed=split_seed, train_fraction=train_fraction)
        self._paths = [paths[i] for i in ids]
        self._class_index = {name: k for k, name in enumerate(class_names)}
        self._mask_dir = root / "segmented-images" / "masks"
        super().__init__(root=root, split=split, ids=ids, class_names=class_names, has_background=True,
                         num_channels=3, multi_label=False, image_size=image_size, augment=augment,
                         mean=mean, std=std)

    def _class_of(self, index: int) -> int:
        return self._class_index[self._paths[index].parent.name]

    def _image_path(self, index: int) -> Path:
        return self._paths[index]

    def _mask_path(self, index: int) -> Path:
        return self._mask_dir / f"{self.ids[index]}.jpg"

    def _read_image(self, index: int) -> np.ndarray:
        return read_rgb(self._image_path(index))

    def _read_mask(self, index: int) -> np.ndarray:
        path = self._mask_path(index)
        if not path.is_file():
            try:
                with Image.open(self._image_path(index)) as img:
                    width, height = img.size
            except (OSError, SyntaxError, ValueError) as err:
                raise DatasetError(f"{self._image_path(index)}: corrupt image ({err})") from err
            return np.full((height, width), IGNORE_INDEX, dtype=np.int64)
        polyp = read_rgb(path).mean(axis=2) > 127  # masks are JPEGs: threshold the compression noise
        return np.where(polyp, self._class_of(index) + 1, 0).astype(np.int64)

    def _image_level_labels(self, index: int) -> np.ndarray:
        labels = np.zeros(self.num_classes, dtype=np.float32)
        labels[self._class_of(index)] = 1.0
        return labels
