"""Bad input: each case raises one DatasetError naming the file and the problem."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from data_fixtures import write_coco, write_dfc2020, write_endotect, write_png, write_voc
from kyam_lib.data import DATASET_NAMES, DatasetError, DatasetNotFoundError, build_dataset, ensure_dataset


@pytest.mark.parametrize("name, layout_word", [
    ("voc", "JPEGImages"), ("coco", "instances_train2014.json"), ("ade20k", "ADE_train_"),
    ("dfc2020", "ROIs0000_test"), ("endotect", "labeled-images"),
])
def test_missing_root_shows_layout(tmp_path, name, layout_word):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset(name, missing, "train")
    message = str(err.value)
    assert str(missing) in message and "Expected layout" in message and layout_word in message
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    with pytest.raises(DatasetNotFoundError):
        ensure_dataset(name, missing)


def test_unknown_dataset_name_lists_names(tmp_path):
    with pytest.raises(ValueError) as err:
        build_dataset("imagenet", tmp_path, "train")
    assert all(name in str(err.value) for name in DATASET_NAMES)


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2012"
    write_voc(root)
    return root


def test_corrupt_image(voc):
    path = voc / "JPEGImages" / "2008_000001.jpg"
    path.write_bytes(b"this is not a jpeg")
    ds = build_dataset("voc", voc, "train")
    with pytest.raises(DatasetError, match="corrupt or truncated image") as err:
        ds[0]
    assert str(path) in str(err.value)


def test_truncated_image(voc):
    path = voc / "JPEGImages" / "2008_000002.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    ds = build_dataset("voc", voc, "train")
    with pytest.raises(DatasetError, match=str(path)):
        ds[1]


def test_missing_image_file(voc):
    (voc / "JPEGImages" / "2008_000001.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="2008_000001.jpg: image file not found"):
        build_dataset("voc", voc, "train")[0]


def test_mask_size_differs_from_image(voc):
    path = voc / "SegmentationClass" / "2008_000001.png"
    write_png(path, np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError, match="mask size 5x5 differs from image size 16x12") as err:
        build_dataset("voc", voc, "train")[0]
    assert str(path) in str(err.value)


def test_label_value_outside_class_list(voc):
    mask = np.zeros((12, 16), np.uint8)
    mask[0, 0] = 30
    path = voc / "SegmentationClass" / "2008_000001.png"
    write_png(path, mask)
    with pytest.raises(DatasetError, match=r"label value\(s\) \[30\] outside the class list") as err:
        build_dataset("voc", voc, "train")[0]
    assert str(path) in str(err.value)


def test_empty_and_missing_split_files(voc):
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("\n\n")
    with pytest.raises(DatasetError, match="split file is empty") as err:
        build_dataset("voc", voc, "train")
    assert str(split) in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="test.txt: split file not found"):
        build_dataset("voc", voc, "test")


@pytest.mark.parametrize("text, problem", [
    ('{"images": [', "malformed COCO json"),
    ('[1, 2, 3]', "top level is list"),
    ('{"images": [], "categories": []}', "missing list 'annotations'"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "images[0] lacks"),
])
def test_malformed_coco_json(tmp_path, text, problem):
    info = write_coco(tmp_path)
    info["json"].write_text(text)
    with pytest.raises(DatasetError, match=problem.replace("[", r"\[")) as err:
        build_dataset("coco", tmp_path, "val")
    assert str(info["json"]) in str(err.value)


def test_coco_annotation_problems(tmp_path):
    info = write_coco(tmp_path)
    data = json.loads(info["json"].read_text())
    data["annotations"][0]["category_id"] = 99
    info["json"].write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="annotation 10 has category_id 99 outside the category list"):
        build_dataset("coco", tmp_path, "val")
    data["annotations"][0]["category_id"] = 18
    data["annotations"][0]["segmentation"] = {"size": [12, 16], "counts": 42}
    info["json"].write_text(json.dumps(data))
    ds = build_dataset("coco", tmp_path, "val")  # segmentations are decoded per item
    with pytest.raises(DatasetError, match="annotation 10 has an unreadable segmentation"):
        ds[0]


def test_dfc_wrong_band_count_and_corrupt_tiff(tmp_path):
    write_dfc2020(tmp_path)
    path = tmp_path / "ROIs0000_test" / "s2_0" / "ROIs0000_test_s2_0_p1.tif"
    tifffile.imwrite(path, np.zeros((12, 16, 16), np.uint16), photometric="minisblack", planarconfig="separate")
    ds = build_dataset("dfc2020", tmp_path, "train")
    with pytest.raises(DatasetError, match="wrong band count: 12 bands, expected 13") as err:
        ds[ds.ids.index("ROIs0000_test_s2_0_p1")]
    assert str(path) in str(err.value)
    path.write_bytes(b"II*\x00garbage")
    with pytest.raises(DatasetError, match="corrupt or truncated GeoTIFF"):
        ds[ds.ids.index("ROIs0000_test_s2_0_p1")]


def test_dfc_label_code_outside_class_list(tmp_path):
    write_dfc2020(tmp_path)
    path = tmp_path / "ROIs0000_validation" / "dfc_validation" / "ROIs0000_validation_dfc_0_p0.tif"
    tifffile.imwrite(path, np.full((16, 16), 12, np.uint8))
    with pytest.raises(DatasetError, match=r"label value\(s\) \[12\] outside the class list") as err:
        build_dataset("dfc2020", tmp_path, "val")[0]
    assert str(path) in str(err.value)


def test_dfc_empty_observation_csv(tmp_path):
    write_dfc2020(tmp_path)
    (tmp_path / "validation_observations.csv").write_text("")
    with pytest.raises(DatasetError, match="validation_observations.csv: observation file is empty"):
        build_dataset("dfc2020", tmp_path, "val")


def test_endotect_unknown_class_folder(tmp_path):
    info = write_endotect(tmp_path)
    stray = tmp_path / "labeled-images" / "lower-gi-tract" / "pathological-findings" / "tumours"
    stray.mkdir()
    info["paths"]["p01"].rename(stray / "p01.jpg")
    with pytest.raises(DatasetError, match="class folder 'tumours' is not one of the 23 HyperKvasir classes"):
        build_dataset("endotect", tmp_path, "train")
