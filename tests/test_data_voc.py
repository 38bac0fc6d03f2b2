"""VOC loader on a format-exact fixture: ids, shapes, labels, ignore, class order, splits, labelmap."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import write_voc, write_voc_labelmap_set
from kyam_lib.data import VOCDataset, build_dataset
from kyam_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from kyam_lib.data.voc import VOC_CLASSES


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012"
    info = write_voc(root)
    return root, info


def test_train_split_items(voc_root):
    root, info = voc_root
    ds = build_dataset("voc", root, "train")
    assert ds.ids == ["2008_000001", "2008_000002"]
    assert ds.class_names == list(VOC_CLASSES) and ds.has_background and ds.num_mask_classes == 21
    assert ds.num_channels == 3 and ds.multi_label
    item = ds[1]
    assert item["id"] == "2008_000002" and item["index"] == 1
    assert item["image"].shape == (3, 10, 14) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64
    assert torch.equal(item["mask"], torch.from_numpy(info["masks"]["2008_000002"].astype(np.int64)))
    expected = np.zeros(20, np.float32)
    expected[[14, 19]] = 1  # person (15) and tvmonitor (20) → indices 14, 19
    assert np.array_equal(item["labels"].numpy(), expected)


def test_normalisation_matches_decoded_jpeg(voc_root):
    root, _ = voc_root
    ds = build_dataset("voc", root, "train")
    pixels = np.asarray(Image.open(root / "JPEGImages" / "2008_000001.jpg").convert("RGB"), np.float32) / 255
    expected = (pixels - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    assert np.allclose(ds[0]["image"].numpy().transpose(1, 2, 0), expected, atol=1e-5)
    raw_image, raw_mask = ds.read_raw(0)
    assert raw_image.dtype == np.uint8 and np.array_equal(raw_image, (pixels * 255).round().astype(np.uint8))
    assert raw_mask.dtype == np.int64 and raw_mask[1, 5] == 255


def test_val_ignore_and_empty_labels(voc_root):
    root, info = voc_root
    ds = VOCDataset(root, "val", image_size=8)
    assert ds.ids == ["2008_000003", "2008_000004"]
    assert ds[0]["labels"].sum() == 0  # background only
    item = ds[1]
    assert item["image"].shape == (3, 8, 8) and item["mask"].shape == (8, 8)
    assert set(item["mask"].unique().tolist()) <= {12, 255}
    assert item["labels"].nonzero().flatten().tolist() == [11]  # dog


def test_data_root_above_dataset_is_accepted(voc_root):
    root, _ = voc_root
    ds = build_dataset("voc", root.parent.parent, "train")  # the folder holding VOCdevkit/
    assert ds.root == root


def test_train_aug_uses_sbd_masks_and_excludes_val(voc_root):
    root, info = voc_root
    ds = build_dataset("voc", root, "train_aug")
    assert ds.ids == ["2008_000001", "2008_000002", "2008_000005", "2008_000006"]
    # 2008_000001's SBD mask (all 3 = bird) differs from SegmentationClass: the Aug one is read.
    assert ds[0]["labels"].nonzero().flatten().tolist() == [2]
    assert ds[2]["labels"].nonzero().flatten().tolist() == [6]


def test_train_aug_list_in_deeplab_format(tmp_path):
    root = tmp_path / "VOC2012"
    write_voc(root)
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "/JPEGImages/2008_000005.jpg /SegmentationClassAug/2008_000005.png\n"
        "/JPEGImages/2008_000001.jpg /SegmentationClassAug/2008_000001.png\n")
    assert build_dataset("voc", root, "train_aug").ids == ["2008_000005", "2008_000001"]


def test_official_random_split(tmp_path):
    root = tmp_path / "VOC2012"
    write_voc(root)
    ids = [f"2009_{i:06d}" for i in range(10)]
    (root / "ImageSets" / "Segmentation" / "trainval.txt").write_text("".join(f"{i}\n" for i in ids))
    train = VOCDataset(root, "train", split_mode="official_random", split_seed=3)
    val = VOCDataset(root, "val", split_mode="official_random", split_seed=3)
    assert len(train) == 7 and len(val) == 3
    assert sorted(train.ids + val.ids) == ids
    assert VOCDataset(root, "train", split_mode="official_random", split_seed=3).ids == train.ids
    other = [VOCDataset(root, "train", split_mode="official_random", split_seed=s).ids for s in range(4, 8)]
    assert any(o != train.ids for o in other)


@pytest.mark.parametrize("rgb_masks", [False, True])
def test_labelmap_defines_classes(tmp_path, rgb_masks):
    info = write_voc_labelmap_set(tmp_path / "mine", rgb_masks=rgb_masks)
    ds = build_dataset("voc", tmp_path / "mine", "train")
    assert ds.class_names == ["cat", "dog", "bird"] and ds.has_background
    assert ds[0]["labels"].tolist() == [1.0, 0.0, 1.0]
    assert ds[1]["labels"].tolist() == [0.0, 1.0, 0.0]
    assert np.array_equal(ds.read_mask(1), info["masks"]["img_b"].astype(np.int64))


def test_labelmap_without_background(tmp_path):
    write_voc_labelmap_set(tmp_path / "mine")
    (tmp_path / "mine" / "labelmap.txt").write_text("sky\ncat\ndog\nbird\n")
    ds = build_dataset("voc", tmp_path / "mine", "train")
    assert not ds.has_background and ds.class_names == ["sky", "cat", "dog", "bird"]
    assert ds[0]["labels"].tolist() == [1.0, 1.0, 0.0, 1.0]  # value 0 is now the class "sky"
