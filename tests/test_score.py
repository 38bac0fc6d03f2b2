"""Scoring a folder of any method's masks (`evaluate --masks`) on a VOC tree of odd-sized images."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_fixtures import write_png
from kyam_lib.config import ConfigError
from kyam_lib.evaluate import main as evaluate_main
from kyam_lib.interop import MapFileError
from kyam_lib.score import ScoreConfig, score_masks
from wsss_fixtures import VOC_ODD_SPLITS, write_voc_odd


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_odd")
    return root, write_voc_odd(root)


def _masks_folder(folder, masks, ids, *, palette=True):
    for image_id in ids:
        write_png(folder / f"{image_id}.png", masks[image_id], with_palette=palette)
    return folder


def _numpy_scores(preds: dict, truths: dict, num_classes: int = 21) -> tuple[float, float, list[float]]:
    """mIoU over classes present in target or prediction, and pixel accuracy; 255 in the truth ignored."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    correct = counted = 0
    for image_id, truth in truths.items():
        pred, valid = preds[image_id].astype(np.int64), truth != 255
        for c in range(num_classes):
            inter[c] += np.sum((pred == c) & (truth == c) & valid)
            union[c] += np.sum(((pred == c) | (truth == c)) & valid)
        correct += np.sum((pred == truth) & valid)
        counted += np.sum(valid)
    iou = [inter[c] / union[c] for c in range(num_classes) if union[c] > 0]
    return float(np.mean(iou)), correct / counted, iou


def test_ground_truth_folder_scores_one(voc, tmp_path):
    root, made = voc
    folder = _masks_folder(tmp_path / "gt", made["masks"], VOC_ODD_SPLITS["train"])
    assert evaluate_main(["--masks", str(folder), "--dataset", "voc", "--data_root", str(root), "--split", "train",
                          "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["miou"] == 1.0 and metrics["pixel_acc"] == 1.0
    assert metrics["split"] == "train" and metrics["masks"] == str(folder) and metrics["images"] == 3
    per_class = pd.read_csv(tmp_path / "out" / "per_class_iou.csv")
    assert len(per_class) == 21 and per_class["class"][0] == "background"
    # classes that occur (background, aeroplane, dog, person) score 1; the others have no IoU
    assert per_class.dropna()["class"].tolist() == ["background", "aeroplane", "dog", "person"]


def test_perturbed_folder_matches_an_independent_computation(voc, tmp_path):
    root, made = voc
    ids = VOC_ODD_SPLITS["val"]
    rng = np.random.default_rng(1)
    preds = {}
    for image_id in ids:
        pred = made["masks"][image_id].copy()
        pred[pred == 255] = 0                                   # a method predicts every pixel
        pred[50:150, 60:200] = 7                                # a class that is not there (car)
        noise = rng.random(pred.shape) < 0.05
        pred[noise] = rng.choice([0, 1, 12, 15], size=int(noise.sum()))
        pred[300:320, 10:90] = 255                              # "no label" from a refinement tool
        preds[image_id] = pred
    folder = tmp_path / "perturbed"
    for image_id in ids:  # greyscale index PNGs this time
        write_png(folder / f"{image_id}.png", preds[image_id], with_palette=False)
    summary = score_masks(ScoreConfig(masks=str(folder), dataset="voc", data_root=str(root), split="val",
                                      out=str(tmp_path / "out")))
    miou, pixel_acc, iou = _numpy_scores(preds, {i: made["masks"][i] for i in ids})
    assert summary["miou"] == pytest.approx(miou, abs=1e-12) and summary["pixel_acc"] == pytest.approx(pixel_acc)
    assert 0.3 < miou < 0.95
    per_class = pd.read_csv(tmp_path / "out" / "per_class_iou.csv").dropna()
    np.testing.assert_allclose(per_class["iou"].to_numpy(), iou)
    assert summary["unlabelled_pixels"] > 0


@pytest.mark.parametrize("problem, match", [
    ("missing", "2009_000005.png: mask file not found"),
    ("size", r"2009_000005.png: mask is 375x500 \(WxH\), the image is 500x375"),
    ("value", r"2009_000005.png: value\(s\) \[21, 40\] are not class indices"),
    ("rgb", "2009_000005.png: expected an index or palette PNG, got mode 'RGB'"),
])
def test_bad_folders_fail_naming_the_file_and_write_nothing(voc, tmp_path, capsys, problem, match):
    root, made = voc
    folder = _masks_folder(tmp_path / "bad", made["masks"], VOC_ODD_SPLITS["val"])
    bad = folder / "2009_000005.png"
    if problem == "missing":
        bad.unlink()
    elif problem == "size":
        write_png(bad, made["masks"]["2009_000005"].T.copy())
    elif problem == "value":
        mask = made["masks"]["2009_000005"].copy()
        mask[0, 0], mask[1, 1] = 21, 40
        write_png(bad, mask)
    else:
        Image.fromarray(np.zeros((375, 500, 3), np.uint8)).save(bad)
    out = tmp_path / "out"
    with pytest.raises(MapFileError, match=match):
        score_masks(ScoreConfig(masks=str(folder), dataset="voc", data_root=str(root), split="val", out=str(out)))
    assert not out.exists()
    # the command line says the same and exits 2
    assert evaluate_main(["--masks", str(folder), "--data_root", str(root), "--split", "val", "--out", str(out)]) == 2
    assert "2009_000005.png" in capsys.readouterr().err and not out.exists()
    shutil.rmtree(folder)


def test_score_config_needs_one_input_and_an_output():
    with pytest.raises(ConfigError, match="exactly one"):
        ScoreConfig(masks="a", maps="b", out="o")
    with pytest.raises(ConfigError, match="ScoreConfig.out"):
        ScoreConfig(masks="a")
