"""evaluate_run on smoke-trained runs: the images it scores, its files, and agreement between its numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kyam_lib.config import ConfigError, TrainConfig
from kyam_lib.evaluate import EvalConfig, class_sources, evaluate_run
from kyam_lib.presets import preset_overrides
from kyam_lib.masks_io import load_mask_png
from kyam_lib.train import build_datasets, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Smoke runs on tiny SYNTHETIC shapes (background) and regions (no background) with subsets."""
    from kyam_lib.data import generate_regions, generate_shapes

    root = tmp_path_factory.mktemp("evaluate")
    generate_shapes(root / "data" / "shapes", num_train=40, num_val=20)
    generate_regions(root / "data" / "regions", num_train=40, num_val=20)
    made = {}
    for dataset in ("shapes", "regions"):
        cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **preset_overrides("smoke"), "dataset": dataset,
                                     "data_root": str(root / "data"), "max_train_images": 32,
                                     "max_val_images": 16, "epochs": 1, "seed": 3,
                                     "out_dir": str(root / "runs" / dataset)})
        train(cfg, show_progress=False)
        made[dataset] = cfg
    return made


def ids_of(subset) -> list[str]:
    return sorted(subset.dataset.ids[i] for i in subset.indices)


def test_scores_exactly_the_images_the_run_used(runs):
    cfg = runs["shapes"]
    summary = evaluate_run(EvalConfig(run_dir=cfg.out_dir))
    out = Path(cfg.out_dir) / "eval"
    train_set, val_set = build_datasets(cfg)
    assert summary["splits"]["train"]["images"] == 32 and summary["splits"]["val"]["images"] == 16
    assert sorted(p.stem for p in (out / "pseudo_masks" / "train").glob("*.png")) == ids_of(train_set)
    assert sorted(p.stem for p in (out / "pseudo_masks" / "val").glob("*.png")) == ids_of(val_set)
    # a cap keeps a subset of those images (a prefix of the same seeded draw)
    capped = evaluate_run(EvalConfig(run_dir=cfg.out_dir, out_dir=str(out.parent / "eval8"), max_images=8))
    assert capped["splits"]["train"]["images"] == 8
    assert {p.stem for p in (out.parent / "eval8" / "pseudo_masks" / "train").glob("*.png")} <= set(ids_of(train_set))


def test_background_threshold_is_chosen_on_train_and_matches_the_curve(runs):
    cfg = runs["shapes"]
    summary = evaluate_run(EvalConfig(run_dir=cfg.out_dir, out_dir=str(Path(cfg.out_dir) / "eval_t")))
    out = Path(cfg.out_dir) / "eval_t"
    curve = pd.read_csv(out / "threshold_curve.csv")
    train_curve = curve[curve["split"] == "train"]
    best = float(train_curve.loc[train_curve["miou"].idxmax(), "background_score"])
    assert summary["background_score"] == best and summary["background_score_chosen_on"] == "train"
    # masks written at the chosen t score exactly what the curve says for that t
    for split in ("train", "val"):
        at_best = curve[(curve["split"] == split) & (curve["background_score"] == best)].iloc[0]
        assert summary["splits"][split]["miou"] == pytest.approx(at_best["miou"], abs=1e-9)
        assert summary["splits"][split]["pixel_acc"] == pytest.approx(at_best["pixel_acc"], abs=1e-9)
    assert 0.0 <= summary["splits"]["val"]["mean_threshold_miou"] <= 1.0
    assert summary["rule"] == "background_score"
    # the training split draws the image labels, val the classifier's classes; recorded per split
    assert summary["class_source"] == {"train": "labels", "val": "predicted"}
    assert summary["splits"]["train"]["class_source"] == "labels"
    assert json.loads((out / "config.json").read_text())["class_source"] == "auto"
    per_class = pd.read_csv(out / "per_class_iou.csv")
    val = per_class[per_class["split"] == "val"]
    assert val["class"].tolist()[0] == "background" and len(val) == 7
    assert summary["splits"]["val"]["miou"] == pytest.approx(np.nanmean(val["iou"].to_numpy()), abs=1e-9)
    # the run sees 32 px images; its masks are at the data's own 64 px
    mask_path = next((out / "pseudo_masks" / "val").glob("*.png"))
    mask = load_mask_png(mask_path)
    original = load_mask_png(Path(cfg.data_root) / "shapes" / "SegmentationClass" / mask_path.name)
    assert tuple(cfg.image_size) == (32, 32) and mask.shape == original.shape == (64, 64) and mask.max() <= 6


def test_dataset_without_background_and_class_source_are_recorded(runs):
    cfg = runs["regions"]
    summary = evaluate_run(EvalConfig(run_dir=cfg.out_dir, class_source="labels", splits=("val",), select_split="val"))
    out = Path(cfg.out_dir) / "eval"
    assert summary["rule"] == "no_background" and summary["class_source"] == {"val": "labels"}
    assert "background_score" not in summary and not (out / "threshold_curve.csv").exists()
    assert json.loads((out / "metrics.json").read_text())["class_source"] == {"val": "labels"}
    assert json.loads((out / "config.json").read_text())["class_source"] == "labels"
    masks = [load_mask_png(p) for p in (out / "pseudo_masks" / "val").glob("*.png")]
    assert len(masks) == 16
    # no background: every pixel gets one of the 8 classes (nearest-label fill)
    assert all(m.max() < 8 for m in masks)
    assert math.isfinite(summary["splits"]["val"]["miou"])


def test_bad_eval_config_names_the_field():
    with pytest.raises(ConfigError, match="EvalConfig.blocks"):
        EvalConfig(blocks="first:2")
    with pytest.raises(ConfigError, match="select_split"):
        EvalConfig(splits=("val",), select_split="train")
    with pytest.raises(ConfigError, match="EvalConfig.class_source"):
        EvalConfig(class_source="oracle")
    with pytest.raises(ConfigError, match="EvalConfig.scales"):
        EvalConfig(scales=(0.5, 2.0))


def test_class_sources_per_split():
    assert class_sources("auto", ["train", "val", "test"]) == {"train": "labels", "val": "predicted",
                                                                "test": "predicted"}
    # DFC2020 trains on its "test" release: the run's own training split draws the labels
    assert class_sources("auto", ["test", "validation"], train_split="test") == {"test": "labels",
                                                                                 "validation": "predicted"}
    assert class_sources("predicted", ["train", "val"]) == {"train": "predicted", "val": "predicted"}
    assert class_sources("val:labels", ["train", "val"]) == {"train": "labels", "val": "labels"}


def test_gated_mean_output_gives_the_same_maps_as_all_heads():
    import torch

    from kyam_lib.config import ModelConfig
    from kyam_lib.evaluate import class_maps_for
    from kyam_lib.method.model import KyamViT

    torch.manual_seed(0)
    model = KyamViT(ModelConfig(num_classes=3, image_size=(32, 32), embed_dim=32, depth=3, num_heads=4)).eval()
    with torch.no_grad():  # one head closed in block 0, every head closed in block 1
        model.blocks[0].head_gate.log_alpha.copy_(torch.tensor([1.0, -1.0, 1.0, 1.0]))
        model.blocks[1].head_gate.log_alpha.fill_(-1.0)
    images = torch.randn(2, 3, 32, 32)
    full = class_maps_for(model, model(images, return_attention=True), (32, 32))
    reduced = class_maps_for(model, model(images, return_attention=True, attention_heads="gated_mean"), (32, 32))
    torch.testing.assert_close(reduced, full)
    last = class_maps_for(model, model(images, return_attention=True, attention_heads="gated_mean"), (32, 32),
                          blocks=1)
    torch.testing.assert_close(last, class_maps_for(model, model(images, return_attention=True), (32, 32), blocks=1))


def test_evaluation_builds_the_run_s_dataset_with_its_loader_options(runs, tmp_path):
    """A run trained with Sentinel-1 bands (15 channels) is evaluated on 15 channels, not 13."""
    base = runs["regions"]
    cfg = base.replace(dfc2020_use_s1=True, out_dir=str(tmp_path / "s1"))
    train(cfg, show_progress=False)
    summary = evaluate_run(EvalConfig(run_dir=cfg.out_dir, out_dir=str(tmp_path / "s1" / "eval"), save_masks=False))
    assert summary["splits"]["val"]["images"] == 16
