"""Dense CRF post-processing: a hand-made case, the label bookkeeping, and evaluate_run with crf=True."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from kyam_lib.crf import CRFParams, crf_available, crf_masks, dense_crf
from kyam_lib.experiments.crf_report import crf_comparison
from kyam_lib.evaluate import EvalConfig, evaluate_run
from kyam_lib.masks_io import load_mask_png
from wsss_fixtures import VOC_ODD_ITEMS, train_tiny_voc_run, write_voc_odd

needs_crf = pytest.mark.skipif(not crf_available(), reason='pydensecrf2 is not installed (pip install -e ".[crf]")')


def two_halves(height: int = 24, width: int = 32):
    """A dark left half and a bright right half; the unary is right on the whole but wrong on a stripe."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = 20
    image[:, width // 2:] = 230
    p_bright = np.where(np.arange(width) < width // 2, 0.2, 0.8)[None].repeat(height, 0)
    p_bright[8:14, 4:12] = 0.6  # weakly wrong evidence inside the dark half
    probs = np.stack([1 - p_bright, p_bright]).astype(np.float32)
    truth = np.broadcast_to((np.arange(width) >= width // 2).astype(np.int64), (height, width))
    return image, probs, truth


@needs_crf
def test_crf_follows_the_image_edge_and_removes_the_wrong_stripe():
    image, probs, truth = two_halves()
    assert (probs.argmax(0) != truth).sum() == 48  # the stripe, before the CRF
    refined = dense_crf(image, probs)
    assert refined.shape == probs.shape and np.allclose(refined.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(refined.argmax(0), truth)
    # with the appearance kernel switched off and a tiny smoothness kernel, the stripe stays
    weak = dense_crf(image, probs, CRFParams(bi_w=0.0, pos_w=0.1))
    assert (weak.argmax(0) != truth).sum() == 48


@needs_crf
def test_crf_masks_only_use_the_allowed_labels():
    image, probs, truth = two_halves()
    # label rows: background t, an absent class (-inf), the bright class
    scores = torch.stack([torch.from_numpy(probs[0]), torch.full(truth.shape, float("-inf")),
                          torch.from_numpy(probs[1])])
    labels = crf_masks(image, scores)
    assert labels.dtype == torch.int64 and set(labels.unique().tolist()) == {0, 2}
    np.testing.assert_array_equal(labels.numpy(), truth * 2)
    with pytest.raises(ValueError, match="no label is allowed"):
        crf_masks(image, torch.full((2, 24, 32), float("-inf")))


@needs_crf
def test_crf_time_on_a_voc_sized_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(375, 500)).transpose(2, 0, 1).astype(np.float32)
    started = time.perf_counter()
    dense_crf(image, probs)
    assert time.perf_counter() - started < 30.0  # about 0.7 s here; a sanity bound on a shared CPU


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_crf")
    write_voc_odd(root / "data")
    return train_tiny_voc_run(root / "data", root / "run")


@needs_crf
def test_evaluate_run_reports_masks_with_and_without_crf(voc_run):
    run = voc_run
    summary = evaluate_run(EvalConfig(run_dir=str(run), splits=("val",), select_split="val", crf=True,
                                      device="cpu"))
    entry = summary["splits"]["val"]
    assert 0.0 <= entry["crf_miou"] <= 1.0 and entry["crf_seconds_per_image"] > 0
    assert summary["crf"] == {"iterations": 10, "pos_w": 3.0, "pos_xy_std": 1.0, "bi_w": 4.0, "bi_xy_std": 67.0,
                              "bi_rgb_std": 3.0}
    out = run / "eval"
    for image_id in ("2009_000004", "2009_000005"):
        refined = load_mask_png(out / "pseudo_masks_crf" / "val" / f"{image_id}.png")
        plain = load_mask_png(out / "pseudo_masks" / "val" / f"{image_id}.png")
        assert refined.shape == plain.shape == VOC_ODD_ITEMS[image_id][:2]
        # the CRF relabels among the classes the plain mask could use (background and the selected ones)
        assert set(np.unique(refined)) <= set(np.unique(plain)) | {0}
    per_class = pd.read_csv(out / "per_class_iou_crf.csv")
    assert entry["crf_miou"] == pytest.approx(np.nanmean(per_class["iou"]), abs=1e-9)
    assert json.loads((out / "config.json").read_text())["crf"] is True


def test_the_core_package_does_not_import_pydensecrf():
    code = ("import sys, kyam_lib.evaluate, kyam_lib.score, kyam_lib.crf, kyam_lib.experiments; "
            "assert 'pydensecrf' not in sys.modules and 'pydensecrf.densecrf' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_crf
def test_crf_comparison_rows_of_a_run_table(voc_run):
    run = voc_run
    plain = evaluate_run(EvalConfig(run_dir=str(run), out_dir=str(run / "eval"), device="cpu"))
    rows = pd.DataFrame([{"label": "full", "seed": 0, "run_dir": str(run)}, {"label": "cam", "seed": 0, "run_dir": ""}])
    per_seed, table = crf_comparison(rows)
    assert per_seed[["split", "crf"]].values.tolist() == [["train", "without"], ["train", "with"],
                                                          ["val", "without"], ["val", "with"]]
    without = per_seed[per_seed["crf"] == "without"].set_index("split")
    # the plain numbers are those of the run's own evaluation (same settings, re-run with crf on)
    for split in ("train", "val"):
        assert without.loc[split, "miou"] == pytest.approx(plain["splits"][split]["miou"], abs=1e-12)
    assert table["n"].tolist() == [1, 1, 1, 1] and (run / "eval_crf" / "metrics.json").is_file()
    # a second call reads the cached evaluation
    stamp = (run / "eval_crf" / "metrics.json").stat().st_mtime_ns
    crf_comparison(rows)
    assert (run / "eval_crf" / "metrics.json").stat().st_mtime_ns == stamp
