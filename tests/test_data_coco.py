"""COCO loader on a format-exact fixture: contiguous ids, polygons + RLE, crowd → 255, labels."""
from __future__ import annotations

import numpy as np
import pytest

from data_fixtures import write_coco
from kyam_lib.data import COCODataset, build_dataset


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return root, write_coco(root)


def test_classes_ids_and_dropping_unlabelled_images(coco_root):
    root, info = coco_root
    ds = build_dataset("coco", root, "val")
    assert ds.class_names == ["person", "car", "dog"]  # category ids 1, 3, 18 → 1, 2, 3
    assert ds.has_background and ds.num_mask_classes == 4
    assert ds.ids == ["COCO_val2014_000000000001"]  # image 2 has no objects, image 3 only a crowd
    assert len(COCODataset(root, "val", keep_empty=True)) == 3


def test_mask_polygon_rle_crowd(coco_root):
    root, info = coco_root
    ds = build_dataset("coco", root, "val")
    item = ds[0]
    mask = item["mask"].numpy()
    assert mask.shape == info["size"] and item["image"].shape == (3, *info["size"])
    # The polygon dog covers x 4..14, y 2..8: its interior is dog, nothing outside its box is.
    assert (mask[3:8, 5:14] == 3).all()
    dog_rows, dog_cols = np.nonzero(mask == 3)
    assert dog_rows.min() >= 2 and dog_rows.max() <= 8 and dog_cols.min() >= 4 and dog_cols.max() <= 14
    # The person (uncompressed RLE) is painted after the larger dog, on top of the crowd.
    assert (mask[info["person"]] == 1).all()
    assert (mask[info["car"]] == 2).all()  # compressed RLE
    # Crowd pixels that no object covers are ignored.
    outside_dog_box = np.ones_like(info["crowd"])
    outside_dog_box[1:10, 3:16] = False
    crowd_only = info["crowd"] & ~info["person"] & outside_dog_box
    assert crowd_only.sum() > 0 and (mask[crowd_only] == 255).all()
    background = ~info["crowd"] & ~info["car"] & outside_dog_box
    assert (mask[background] == 0).all()
    assert item["labels"].tolist() == [1.0, 1.0, 1.0]


def test_crowd_class_counts_as_label(coco_root):
    root, info = coco_root
    ds = COCODataset(root, "val", keep_empty=True)
    crowd_only = ds.ids.index("COCO_val2014_000000000003")
    mask = ds.read_mask(crowd_only)
    assert np.array_equal(mask == 255, info["crowd"]) and (mask[~info["crowd"]] == 0).all()
    assert ds.image_labels(crowd_only).tolist() == [0.0, 1.0, 0.0]  # the crowd of cars
    assert ds.image_labels(ds.ids.index("COCO_val2014_000000000002")).sum() == 0


def test_year_2017_layout(tmp_path):
    write_coco(tmp_path, year=2017, split="train")
    ds = build_dataset("coco", tmp_path, "train", year=2017, image_size=8)
    assert ds.ids == ["000000000001"]
    assert ds[0]["image"].shape == (3, 8, 8)
