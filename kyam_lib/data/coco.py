"""MS-COCO 2014 (default) or 2017 instance annotations, rendered to semantic masks with pycocotools.

Category ids are mapped to contiguous 1..K in id order (K = 80 for COCO), 0 = background.
Objects are painted largest first, so small objects stay visible where they overlap; crowd
regions become 255 wherever no object covers them. Polygons, uncompressed and compressed RLE
are all decoded by pycocotools. Image labels: the classes present in the mask, plus the
classes of crowd regions (the crowd is visible in the image).
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO

from .base import IGNORE_INDEX, DatasetError, DatasetNotFoundError, KyamDataset, find_root, labels_from_mask, read_rgb
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["COCO_LAYOUT", "COCODataset", "resolve_coco_root"]

COCO_LAYOUT = """\
  <root>/
    annotations/instances_train2014.json   (instances_<split><year>.json)
    annotations/instances_val2014.json
    train2014/<file_name>                  as named in the json, e.g. COCO_train2014_000000000009.jpg
    val2014/<file_name>                    (train2017/, val2017/ with year=2017)
"""
_CANDIDATES = ("", "coco", "COCO", "mscoco")


def resolve_coco_root(root: str | Path) -> Path:
    """The COCO folder at or below `root` (see `COCO_LAYOUT`)."""
    return find_root(root, _CANDIDATES, ("annotations",), dataset="coco", layout=COCO_LAYOUT)


def _load_annotations(path: Path) -> dict:
    """Parse and check an instances json, naming the file and the field on any problem."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: malformed COCO json ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: malformed COCO json (top level is {type(data).__name__}, expected an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: malformed COCO json (missing list {key!r})")
    required = {"images": ("id", "file_name", "height", "width"), "categories": ("id", "name"),
                "annotations": ("id", "image_id", "category_id", "segmentation")}
    for key, fields in required.items():
        for number, entry in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise DatasetError(f"{path}: malformed COCO json ({key}[{number}] lacks {missing})")
    category_ids = {c["id"] for c in data["categories"]}
    image_ids = {i["id"] for i in data["images"]}
    for ann in data["annotations"]:
        if ann["category_id"] not in category_ids:
            raise DatasetError(f"{path}: annotation {ann['id']} has category_id {ann['category_id']} "
                               "outside the category list")
        if ann["image_id"] not in image_ids:
            raise DatasetError(f"{path}: annotation {ann['id']} refers to unknown image_id {ann['image_id']}")
    return data


class COCODataset(KyamDataset):
    """COCO semantic segmentation from instance annotations; `split` in train / val.

    keep_empty=False drops images without any non-crowd object (they carry no image label).
    """

    name = "coco"

    def __init__(self, root: str | Path, split: str = "train", *, year: int = 2014,
                 image_size: int | tuple[int, int] | None = None, augment: bool = False, keep_empty: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        root = resolve_coco_root(root)
        if split not in ("train", "val"):
            raise ValueError(f"coco: split must be 'train' or 'val', got {split!r}")
        self._json_path = root / "annotations" / f"instances_{split}{year}.json"
        data = _load_annotations(self._json_path)
        self._coco = COCO()
        self._coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self._coco.createIndex()
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self._contiguous = {c["id"]: k + 1 for k, c in enumerate(categories)}
        self._image_dir = root / f"{split}{year}"
        images = sorted(data["images"], key=lambda i: i["id"])
        if not keep_empty:
            images = [i for i in images
                      if any(not a.get("iscrowd", 0) for a in self._coco.imgToAnns.get(i["id"], []))]
        self._images = images
        super().__init__(root=root, split=split, ids=[Path(i["file_name"]).stem for i in images],
                         class_names=[c["name"] for c in categories], has_background=True, num_channels=3,
                         multi_label=True, image_size=image_size, augment=augment, mean=mean, std=std)

    def _image_path(self, index: int) -> Path:
        return self._image_dir / self._images[index]["file_name"]

    def _mask_path(self, index: int) -> Path:
        info = self._images[index]
        return Path(f"{self._json_path} (image id {info['id']}, {info['file_name']})")

    def _read_image(self, index: int) -> np.ndarray:
        path = self._image_path(index)
        image = read_rgb(path)
        info = self._images[index]
        if image.shape[:2] != (info["height"], info["width"]):
            raise DatasetError(f"{path}: image size {image.shape[1]}x{image.shape[0]} differs from the mask size "
                               f"{info['width']}x{info['height']} given in {self._json_path}")
        return image

    def _decode(self, ann: dict) -> np.ndarray:
        try:
            with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, not ours
                warnings.simplefilter("ignore", DeprecationWarning)
                return self._coco.annToMask(ann).astype(bool)
        except Exception as err:  # pycocotools raises assorted types on bad segmentations
            raise DatasetError(f"{self._json_path}: annotation {ann['id']} has an unreadable segmentation "
                               f"({type(err).__name__}: {err})") from err

    def _read_mask(self, index: int) -> np.ndarray:
        info = self._images[index]
        mask = np.zeros((info["height"], info["width"]), dtype=np.int64)
        anns = self._coco.imgToAnns.get(info["id"], [])
        for ann in (a for a in anns if a.get("iscrowd", 0)):
            mask[self._decode(ann)] = IGNORE_INDEX
        objects = [a for a in anns if not a.get("iscrowd", 0)]
        objects.sort(key=lambda a: -float(a.get("area", 0.0)))
        for ann in objects:
            mask[self._decode(ann)] = self._contiguous[ann["category_id"]]
        return mask

    def image_labels(self, index: int, mask: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            mask = self.read_mask(index)
        labels = labels_from_mask(mask, num_classes=self.num_classes, has_background=True)
        for ann in self._coco.imgToAnns.get(self._images[index]["id"], []):
            if ann.get("iscrowd", 0):
                labels[self._contiguous[ann["category_id"]] - 1] = 1.0
        return labels
