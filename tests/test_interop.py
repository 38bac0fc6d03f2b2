"""Class maps in the IRN/ToCo and MCTformer formats, cls_labels.npy, and kyam's own run on a VOC tree of
odd-sized images: masks at each JPEG's size, exported maps that re-read into the very same pseudo-masks."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from kyam_lib.data import build_dataset
from kyam_lib.evaluate import EvalConfig, evaluate_run, main as evaluate_main
from kyam_lib.interop import (MapFileError, load_dict_npy, read_class_maps, read_cls_labels, write_class_maps,
                              write_cls_labels)
from kyam_lib.masks_io import load_mask_png
from kyam_lib.score import ScoreConfig, cls_labels_of, score_maps
from wsss_fixtures import VOC_ODD_ITEMS, VOC_ODD_SPLITS, train_tiny_voc_run, write_voc_odd


def test_irn_file_is_plain_numpy_with_the_documented_keys(tmp_path):
    maps = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    write_class_maps(tmp_path / "a.npy", maps, [3, 14], "irn")
    value = np.load(tmp_path / "a.npy", allow_pickle=True).item()
    assert set(value) == {"keys", "high_res"} and value["keys"].tolist() == [3, 14]
    assert value["high_res"].dtype == np.float32 and value["high_res"].shape == (2, 5, 7)
    read, present = read_class_maps(tmp_path / "a.npy", "irn", num_classes=20, size=(5, 7))
    assert read.shape == (20, 5, 7) and present.nonzero().flatten().tolist() == [3, 14]
    np.testing.assert_array_equal(read[14].numpy(), maps[1])
    assert read[0].abs().sum() == 0


def test_mctformer_file_is_a_dict_of_class_maps(tmp_path):
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    write_class_maps(tmp_path / "m.npy", maps, [0, 19], "mctformer")
    value = np.load(tmp_path / "m.npy", allow_pickle=True).item()
    assert sorted(value) == [0, 19] and value[19].shape == (4, 4)
    read, present = read_class_maps(tmp_path / "m.npy", "mctformer", num_classes=20)
    np.testing.assert_array_equal(read[0].numpy(), maps[0])
    assert present.sum() == 2
    with pytest.raises(MapFileError, match=r"m.npy: maps are 4x4 \(WxH\), the image is 5x4"):
        read_class_maps(tmp_path / "m.npy", "mctformer", num_classes=20, size=(4, 5))
    with pytest.raises(MapFileError, match="class key 19 is not a foreground class index"):
        read_class_maps(tmp_path / "m.npy", "mctformer", num_classes=10)


def test_only_dicts_of_arrays_are_accepted(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    np.save(tmp_path / "strings.npy", {"keys": np.zeros(1), "note": "hello"}, allow_pickle=True)
    np.save(tmp_path / "objects.npy", {"keys": np.array([None, 1], dtype=object)}, allow_pickle=True)
    np.save(tmp_path / "nested.npy", {"a": {"b": np.zeros(2)}}, allow_pickle=True)
    with pytest.raises(MapFileError, match="array.npy: expected a dict saved with np.save, got a plain float64 array"):
        load_dict_npy(tmp_path / "array.npy")
    with pytest.raises(MapFileError, match="strings.npy: entry 'note' is a str, not an array"):
        load_dict_npy(tmp_path / "strings.npy")
    with pytest.raises(MapFileError, match="objects.npy: object arrays"):
        load_dict_npy(tmp_path / "objects.npy")
    with pytest.raises(MapFileError, match="nested.npy: entry 'a' is a dict"):
        load_dict_npy(tmp_path / "nested.npy")
    with pytest.raises(MapFileError, match="missing.npy: file not found"):
        load_dict_npy(tmp_path / "missing.npy")
    write_class_maps(tmp_path / "m.npy", np.zeros((1, 2, 2)), [1], "mctformer")
    with pytest.raises(MapFileError, match="an IRN map file needs the entries"):
        read_class_maps(tmp_path / "m.npy", "irn", num_classes=20)


class _Payload:
    """Unpickling this would call os.remove on the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.remove, (self.marker,)


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("still here")
    np.save(tmp_path / "evil.npy", {"keys": np.zeros(1), "high_res": _Payload(marker)}, allow_pickle=True)
    refused = r"evil.npy: not a .npy dict of arrays \(.*remove is not a numpy array part\)"
    with pytest.raises(MapFileError, match=refused):
        read_class_maps(tmp_path / "evil.npy", "irn", num_classes=20)
    assert marker.read_text() == "still here"


def test_cls_labels_with_string_or_irn_integer_keys(tmp_path):
    a, b = np.eye(20, dtype=np.float32)[3], np.eye(20, dtype=np.float32)[[0, 14]].sum(0)
    np.save(tmp_path / "int.npy", {2007000032: a, 2007000039: b}, allow_pickle=True)
    write_cls_labels(tmp_path / "str.npy", {"2007_000032": a, "2007_000039": b})
    for name in ("int.npy", "str.npy"):
        labels = read_cls_labels(tmp_path / name, ["2007_000032", "2007_000039"], num_classes=20)
        np.testing.assert_array_equal(labels["2007_000039"], b)
    with pytest.raises(MapFileError, match="no labels for image '2007_000040'"):
        read_cls_labels(tmp_path / "str.npy", ["2007_000040"], num_classes=20)
    with pytest.raises(MapFileError, match="not a 21-d 0/1 vector"):
        read_cls_labels(tmp_path / "str.npy", ["2007_000032"], num_classes=21)


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_odd")
    write_voc_odd(root / "data")
    run = train_tiny_voc_run(root / "data", root / "run")
    return root / "data", run


def test_cls_labels_written_for_a_dataset_read_back(voc_run, tmp_path):
    data, _ = voc_run
    assert evaluate_main(["--write_cls_labels", str(tmp_path / "cls_labels.npy"), "--dataset", "voc",
                          "--data_root", str(data), "--split", "train"]) == 0
    dataset = build_dataset("voc", data, "train")
    labels = read_cls_labels(tmp_path / "cls_labels.npy", dataset.ids, num_classes=20)
    expected = cls_labels_of(dataset)
    assert all(np.array_equal(labels[i], expected[i]) for i in dataset.ids)
    assert labels["2009_000002"].nonzero()[0].tolist() == [11, 14]  # dog, person


@pytest.mark.parametrize("fmt", ["irn", "mctformer"])
def test_exported_maps_reproduce_kyams_own_pseudo_masks(voc_run, fmt):
    data, run = voc_run
    out = run / f"eval_{fmt}"
    assert evaluate_main(["--run_dir", str(run), "--out_dir", str(out), "--export_maps", fmt, "--device", "cpu"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["resolution"] == "original"
    for split, ids in VOC_ODD_SPLITS.items():
        for image_id in ids:
            height, width = VOC_ODD_ITEMS[image_id][:2]
            # pseudo-masks of the JPEG's size, though the network saw 32x32
            assert load_mask_png(out / "pseudo_masks" / split / f"{image_id}.png").shape == (height, width)
            with Image.open(data / "JPEGImages" / f"{image_id}.jpg") as jpeg:
                assert jpeg.size == (width, height)
            value = np.load(out / f"maps_{fmt}" / split / f"{image_id}.npy", allow_pickle=True).item()
            stack = value["high_res"] if fmt == "irn" else np.stack(list(value.values()))
            keys = value["keys"].tolist() if fmt == "irn" else list(value)
            assert stack.dtype == np.float32 and stack.shape[1:] == (height, width)
            assert np.allclose(stack.max(axis=(1, 2)), 1.0) and stack.min() >= 0.0
            if split == "train":  # the training split draws the image labels
                truth = np.asarray(Image.open(data / "SegmentationClass" / f"{image_id}.png"))
                assert keys == sorted(int(c) - 1 for c in np.unique(truth) if 0 < c < 255)
        scored = score_maps(ScoreConfig(maps=str(out / f"maps_{fmt}" / split), map_format=fmt, dataset="voc",
                                        data_root=str(data), split=split, out=str(out / f"rescored_{split}"),
                                        background_score=summary["background_score"]))
        assert scored["miou"] == summary["splits"][split]["miou"]
        assert scored["pixel_acc"] == summary["splits"][split]["pixel_acc"]
        for image_id in ids:
            ours = load_mask_png(out / "pseudo_masks" / split / f"{image_id}.png")
            again = load_mask_png(out / f"rescored_{split}" / "pseudo_masks" / split / f"{image_id}.png")
            np.testing.assert_array_equal(again, ours)
    # without a given t the training split's curve picks the same t as kyam's evaluation did
    chosen = score_maps(ScoreConfig(maps=str(out / f"maps_{fmt}" / "train"), map_format=fmt, dataset="voc",
                                    data_root=str(data), split="train", out=str(out / "rescored_t"), save_masks=False))
    assert chosen["background_score"] == summary["background_score"]
    assert not (out / "rescored_t" / "pseudo_masks").exists()


def test_mixed_sizes_in_one_batch_score_as_one_at_a_time(voc_run):
    _, run = voc_run
    together = evaluate_run(EvalConfig(run_dir=str(run), out_dir=str(run / "eval_b3"), batch_size=3, device="cpu"))
    alone = evaluate_run(EvalConfig(run_dir=str(run), out_dir=str(run / "eval_b1"), batch_size=1, device="cpu"))
    for split in ("train", "val"):
        for key in ("miou", "pixel_acc", "mean_threshold_miou", "classifier_acc"):
            assert together["splits"][split][key] == pytest.approx(alone["splits"][split][key], abs=1e-12)
    curve_b3 = (run / "eval_b3" / "threshold_curve.csv").read_text()
    assert curve_b3 == (run / "eval_b1" / "threshold_curve.csv").read_text()


def test_cls_labels_choose_the_classes_of_read_maps(voc_run, tmp_path):
    data, run = voc_run
    out = run / "eval_labels"
    evaluate_run(EvalConfig(run_dir=str(run), out_dir=str(out), export_maps="irn", splits=("train",), device="cpu"))
    # keep only "person" (index 14) for every image: the masks may use background and person only
    dataset = build_dataset("voc", data, "train")
    write_cls_labels(tmp_path / "person.npy", {i: np.eye(20, dtype=np.float32)[14] for i in dataset.ids})
    assert evaluate_main(["--maps", str(out / "maps_irn" / "train"), "--dataset", "voc", "--data_root", str(data),
                          "--split", "train", "--cls_labels", str(tmp_path / "person.npy"),
                          "--out", str(tmp_path / "scored")]) == 0
    metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert metrics["class_source"] == "cls_labels" and metrics["images"] == 3
    for image_id in dataset.ids:
        mask = load_mask_png(tmp_path / "scored" / "pseudo_masks" / "train" / f"{image_id}.png")
        assert set(np.unique(mask)) <= {0, 15}
        # 2009_000001 holds a person, and its exported map makes person pixels
        if image_id == "2009_000001":
            assert (mask == 15).any()
