"""The paper's protocol on a format-exact VOC tree: train_aug, loader options, per-dataset settings, end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_fixtures import write_voc_protocol
from kyam_lib import evaluate as evaluate_module
from kyam_lib import segmentation
from kyam_lib.config import ConfigError, TrainConfig
from kyam_lib.presets import PAPER_DATASET_SETTINGS, preset_overrides
from kyam_lib.protocol import dataset_options, resolve_num_workers, resolve_train_split
import kyam_lib.train as train_module
from kyam_lib.checkpoint import load_checkpoint
from kyam_lib.train import TrainingError, config_from_args, model_config_for, train
from train_helpers import smoke_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_voc_protocol(tmp_path_factory.mktemp("voc_protocol"))


def test_auto_split_is_train_aug_when_the_sbd_masks_exist(voc, tmp_path):
    cfg = TrainConfig(dataset="voc", data_root=str(voc["root"]), train_split="auto", image_size=(32, 32))
    resolved, note = resolve_train_split(cfg)
    assert resolved.train_split == "train_aug" and "SegmentationClassAug" in note
    # without SBD: train, and the note says what is missing
    plain = tmp_path / "VOC2012"
    (plain / "ImageSets" / "Segmentation").mkdir(parents=True)
    (plain / "JPEGImages").symlink_to(voc["root"] / "JPEGImages", target_is_directory=True)
    for name in ("train", "val"):
        (plain / "ImageSets" / "Segmentation" / f"{name}.txt").write_text(
            (voc["root"] / "ImageSets" / "Segmentation" / f"{name}.txt").read_text())
    resolved, note = resolve_train_split(cfg.replace(data_root=str(plain)))
    assert resolved.train_split == "train" and "no SegmentationClassAug" in note
    assert resolve_train_split(cfg.replace(train_split="val"))[0].train_split == "val"


def test_paper_preset_per_dataset_settings_of_table_7():
    assert preset_overrides("paper", "dfc2020")["patch_size"] == 14
    assert preset_overrides("paper", "dfc2020")["dfc2020_use_s1"] is True
    assert preset_overrides("paper", "endotect")["image_size"] == [512, 640]
    assert preset_overrides("paper", "ade20k")["image_size"] == [208, 320]
    assert preset_overrides("paper", "coco")["coco_year"] == 2014
    for dataset in PAPER_DATASET_SETTINGS:  # every one builds a valid config
        values = {**TrainConfig().to_dict(), **preset_overrides("paper", dataset), "dataset": dataset}
        cfg = TrainConfig.from_dict(values)
        assert cfg.image_size[0] % cfg.patch_size == 0 and cfg.deterministic is False
    cfg, _ = config_from_args(["--preset", "paper", "--dataset", "dfc2020", "--patch_size", "16"])
    assert (cfg.patch_size, cfg.dfc2020_use_s1, cfg.train_split) == (16, True, "test")  # the command line wins
    assert preset_overrides("smoke", "dfc2020") == preset_overrides("smoke")


def test_loader_options_reach_only_their_dataset():
    cfg = TrainConfig(coco_year=2017, dfc2020_use_s1=True, endotect_subset="lower-gi", ade20k_other_as_class=False)
    assert dataset_options(cfg, "coco") == {"year": 2017}
    assert dataset_options(cfg, "dfc2020") == {"use_s1": True}
    assert dataset_options(cfg, "ade20k") == {"other_as_class": False}
    assert dataset_options(cfg, "endotect") == {"subset": "lower-gi"}
    assert dataset_options(cfg, "voc") == {} and dataset_options(TrainConfig(), "shapes") == {}
    random_voc = TrainConfig(voc_split_mode="official_random", split_seed=3)
    assert dataset_options(random_voc, "voc") == {"split_mode": "official_random", "split_seed": 3}
    cfg, _ = config_from_args(["--dataset", "coco", "--coco_year", "2017"])
    assert cfg.coco_year == 2017
    with pytest.raises(ConfigError, match="pretrained_file"):
        TrainConfig(pretrained_file="weights.safetensors")


def test_worker_count_from_the_cpus():
    cpus = len(os.sched_getaffinity(0))
    assert resolve_num_workers(-1) == max(0, min(8, cpus - 1))
    assert resolve_num_workers(3) == 3 and resolve_num_workers(-1, processes=10 * cpus) == 0


@pytest.fixture(scope="module")
def paper_run(voc, tmp_path_factory):
    """`python -m kyam_lib.train --preset paper` with tiny overrides, as a user types it."""
    out = tmp_path_factory.mktemp("paper_run") / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "kyam_lib.train", "--preset", "paper", "--dataset", "voc",
                           "--data_root", str(voc["root"].parents[1]), "--out", str(out), "--epochs", "1",
                           "--model_size", "tiny", "--image_size", "[32, 32]", "--patch_size", "8",
                           "--batch_size", "2", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert evaluate_module.main(["--run_dir", str(out)]) == 0
    return out, done.stderr


def test_paper_run_trains_on_train_aug_and_scores_train_and_val(paper_run, voc):
    out, stderr = paper_run
    config = json.loads((out / "config.json").read_text())
    assert config["train_split"] == "train_aug" and "train split: train_aug" in stderr
    assert (config["num_workers"], config["persistent_workers"], config["deterministic"]) == (-1, True, False)
    assert (config["checkpoint_every"], config["keep_checkpoints"]) == (5, 1)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0001"]  # the last epoch always has one
    summary = json.loads((out / "eval" / "metrics.json").read_text())
    assert {split: entry["images"] for split, entry in summary["splits"].items()} == {"train": 2, "val": 2}
    for entry in summary["splits"].values():
        assert 0.0 <= entry["miou"] <= 1.0
    names = {split: sorted(p.stem for p in (out / "eval" / "pseudo_masks" / split).glob("*.png"))
             for split in ("train", "val")}
    assert names == {"train": voc["train"], "val": voc["val"]}


def test_paper_run_pseudo_masks_have_each_jpegs_size(paper_run, voc):
    out, _ = paper_run
    for split in ("train", "val"):
        for image_id in voc[split]:
            with Image.open(out / "eval" / "pseudo_masks" / split / f"{image_id}.png") as mask:
                height, width = voc["sizes"][image_id]
                assert mask.size == (width, height), image_id


def test_segmentation_inherits_the_run_and_predicts_at_image_size(paper_run, voc, tmp_path):
    out, _ = paper_run
    seg_dir = tmp_path / "seg"
    assert segmentation.main(["--run_dir", str(out), "--epochs", "1", "--batch_size", "2", "--out", str(seg_dir),
                              "--device", "cpu"]) == 0
    stored = json.loads((seg_dir / "config.json").read_text())
    assert (stored["dataset"], stored["train_split"], stored["image_size"]) == ("voc", "train", [32, 32])
    assert stored["masks"] == str(out / "eval" / "pseudo_masks" / "train")
    metrics = json.loads((seg_dir / "metrics.json").read_text())
    assert metrics["val_images"] == 2 and metrics["train_images"] == 2 and 0.0 <= metrics["miou"] <= 1.0
    assert segmentation.main(["predict", "--seg_dir", str(seg_dir), "--split", "test"]) == 0
    server = seg_dir / "predictions" / segmentation.VOC_SERVER_DIR
    assert sorted(p.stem for p in server.glob("*.png")) == voc["test"]
    for image_id in voc["test"]:
        with Image.open(server / f"{image_id}.png") as mask:
            assert mask.mode == "P" and mask.size == voc["sizes"][image_id][::-1]
            assert set(np.unique(np.asarray(mask))) <= set(range(21))


def test_checkpoint_cadence_snapshots_and_a_periodic_finite_check(data_root, tmp_path, monkeypatch):
    cfg = smoke_config(data_root, tmp_path / "run", epochs=3, checkpoint_every=2, keep_checkpoints=1,
                       snapshot_every=1)
    train(cfg, show_progress=False)
    out = tmp_path / "run"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0003"]  # 2 pruned, 3 is the last epoch
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["epoch_0001", "epoch_0002", "epoch_0003"]
    assert not (out / "snapshots" / "epoch_0001" / "train_state.json").exists()  # weights only
    assert load_checkpoint(out / "snapshots" / "epoch_0001").model_config.num_heads == 4

    steps_per_epoch, calls, real_penalty = 96 // 16, {"n": 0}, train_module.l0_penalty

    def penalty_turning_nan(model):
        calls["n"] += 1
        value = real_penalty(model)
        return value * float("nan") if calls["n"] == steps_per_epoch + 2 else value

    monkeypatch.setattr(train_module, "l0_penalty", penalty_turning_nan)
    with pytest.raises(TrainingError, match=r"at epoch 2, one of steps 1\.\.4 \(checked every"):
        train(smoke_config(data_root, tmp_path / "nan", epochs=3, finite_check_every=4), show_progress=False)


def test_num_heads_field_sets_the_models_heads():
    cfg = TrainConfig(model_size="base", num_heads=12, patch_size=16, image_size=(224, 224))
    model_config = model_config_for(cfg, num_classes=20, in_channels=3, multi_label=True)
    assert (model_config.embed_dim, model_config.depth, model_config.num_heads) == (768, 12, 12)
    assert model_config_for(cfg.replace(num_heads=0), num_classes=20, in_channels=3,
                            multi_label=True).num_heads == 16
