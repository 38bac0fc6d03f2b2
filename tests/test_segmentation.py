import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader

from kyam_lib.config import ConfigError
from kyam_lib.data import DatasetError, DatasetNotFoundError, build_dataset
from kyam_lib.data.synthetic import generate_shapes
from kyam_lib.masks_io import load_mask_png, save_pseudo_mask
from kyam_lib.segmentation import (PseudoMaskDataset, SegConfig, SegModelConfig, SegmentationViT,
                                   build_seg_datasets, compare_pseudo_vs_full, evaluate_segmentation,
                                   init_backbone_from_timm, load_segmentation_model, main, train_segmentation)

SIZE = 32
NUM_MASK_CLASSES = 7  # background + the 6 shapes classes
# A relabelling of the mask classes (255 stays ignore); nearest-neighbour resampling commutes with it.
PERMUTATION = np.array([3, 5, 0, 6, 1, 2, 4])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_shapes(root / "shapes", seed=0, num_train=32, num_val=16, image_size=SIZE)
    return root


def _relabel(mask: np.ndarray) -> np.ndarray:
    lut = np.arange(256)
    lut[: len(PERMUTATION)] = PERMUTATION
    return lut[mask].astype(np.uint8)


@pytest.fixture(scope="module")
def mask_dirs(data_root, tmp_path_factory):
    """Pseudo-mask folders for the train split: exact copies of the ground truth, and relabelled copies."""
    base = tmp_path_factory.mktemp("pseudo")
    copies, relabelled = base / "copies", base / "relabelled"
    copies.mkdir()
    for path in sorted((data_root / "shapes" / "SegmentationClass").glob("train_*.png")):
        shutil.copy(path, copies / path.name)
        save_pseudo_mask(_relabel(load_mask_png(path)), relabelled / path.name)
    return {"copies": copies, "relabelled": relabelled}


def _cfg(data_root, out_dir, **changes) -> SegConfig:
    values = dict(dataset="shapes", data_root=str(data_root), image_size=(SIZE, SIZE), model_size="tiny",
                  patch_size=8, epochs=1, batch_size=8, lr=1e-3, warmup_epochs=0.5, seed=3,
                  out_dir=str(out_dir), device="cpu")
    return SegConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory):
    """One smoke epoch on ground truth, through the command line."""
    out = tmp_path_factory.mktemp("seg_full")
    argv = ["--dataset", "shapes", "--data_root", str(data_root), "--image_size", f"[{SIZE}, {SIZE}]",
            "--model_size", "tiny", "--epochs", "1", "--batch_size", "8", "--lr", "1e-3", "--warmup_epochs", "0.5",
            "--seed", "3", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    return out


# --- data --------------------------------------------------------------------------------------

def test_pseudo_masks_go_through_the_same_joint_transform(data_root, mask_dirs):
    ground_truth = build_dataset("shapes", data_root / "shapes", "train", image_size=24, augment=True)
    pseudo = PseudoMaskDataset(build_dataset("shapes", data_root / "shapes", "train", image_size=24, augment=True),
                               mask_dirs["relabelled"])
    assert pseudo.class_names == ground_truth.class_names and len(pseudo) == 32
    changed = 0
    for index in range(6):
        torch.manual_seed(index)
        expected = ground_truth[index]
        torch.manual_seed(index)
        item = pseudo[index]
        # same crop and flip: identical image, and the relabelled mask is the relabelled ground truth
        assert torch.equal(item["image"], expected["image"])
        assert item["mask"].shape == (24, 24) and item["mask"].dtype == torch.int64
        assert torch.equal(item["mask"], torch.from_numpy(_relabel(expected["mask"].numpy())).long())
        assert torch.equal(item["labels"], expected["labels"]) and item["id"] == expected["id"] == f"train_{index:06d}"
        changed += int(not torch.equal(item["mask"], expected["mask"]))
    assert changed == 6


def test_smaller_pseudo_mask_is_resized_to_its_image(data_root, tmp_path):
    # evaluation writes pseudo-masks at the classifier's input size; here half the image size
    small = np.random.default_rng(0).integers(0, NUM_MASK_CLASSES, size=(SIZE // 2, SIZE // 2)).astype(np.uint8)
    save_pseudo_mask(small, tmp_path / "train_000000.png")
    pseudo = PseudoMaskDataset(build_dataset("shapes", data_root / "shapes", "train", augment=False), tmp_path)
    expected = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    assert np.array_equal(pseudo[0]["mask"].numpy(), expected)


def test_missing_or_bad_pseudo_masks_name_the_file(data_root, mask_dirs, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(mask_dirs["copies"], partial)
    (partial / "train_000005.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"train_000005\.png: pseudo-mask file not found \(1 of 32"):
        build_seg_datasets(_cfg(data_root, tmp_path / "out", masks=str(partial)))
    pseudo = PseudoMaskDataset(build_dataset("shapes", data_root / "shapes", "train"), partial)
    assert pseudo.missing() == [partial / "train_000005.png"]
    with pytest.raises(DatasetNotFoundError, match=r"train_000005\.png: pseudo-mask file not found"):
        pseudo[5]
    with pytest.raises(DatasetNotFoundError, match="nowhere: pseudo-mask folder not found"):
        PseudoMaskDataset(pseudo.dataset, tmp_path / "nowhere")
    assert main(["--data_root", str(data_root), "--masks", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "nowhere: pseudo-mask folder not found" in capsys.readouterr().err
    save_pseudo_mask(np.full((SIZE, SIZE), 9, np.uint8), partial / "train_000001.png")
    with pytest.raises(DatasetError, match=r"train_000001\.png: pseudo-mask value\(s\) \[9\] outside"):
        pseudo[1]


# --- model -------------------------------------------------------------------------------------

@pytest.mark.parametrize("decoder", ["linear", "conv"])
def test_output_shape_for_non_square_inputs(decoder):
    torch.manual_seed(0)
    model = SegmentationViT(SegModelConfig(num_classes=5, in_channels=4, image_size=(32, 48), patch_size=8,
                                           embed_dim=32, depth=2, num_heads=2, decoder=decoder)).eval()
    images = torch.randn(2, 4, 32, 48)
    assert model.patch_features(images).shape == (2, 32, 4, 6)
    logits = model(images)
    assert logits.shape == (2, 5, 32, 48) and torch.isfinite(logits).all()


def test_patch_grid_is_row_major():
    # Without blocks, tokens do not mix: changing one patch changes exactly that cell of the grid.
    torch.manual_seed(0)
    model = SegmentationViT(SegModelConfig(num_classes=3, image_size=(16, 40), patch_size=8, embed_dim=16,
                                           depth=0, num_heads=2)).eval()
    images = torch.randn(1, 3, 16, 40)
    changed = images.clone()
    changed[:, :, 8:16, 24:32] += 1.0  # patch row 1, column 3
    difference = (model.patch_features(changed) - model.patch_features(images)).abs().sum(dim=1)[0]
    assert difference.shape == (2, 5)
    assert difference[1, 3] > 0 and difference.flatten().count_nonzero() == 1


def test_pretrained_backbone_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    source = VisionTransformer(img_size=48, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "vit.safetensors")
    model = SegmentationViT(SegModelConfig(num_classes=4, in_channels=3, image_size=(16, 24), patch_size=8,
                                           embed_dim=32, depth=2, num_heads=2))
    left = init_backbone_from_timm(model, str(tmp_path / "vit.safetensors"))
    assert left == []
    own = model.backbone.state_dict()
    assert torch.equal(own["blocks.1.mlp.fc2.weight"], source.state_dict()["blocks.1.mlp.fc2.weight"])
    assert torch.equal(own["cls_token"], source.cls_token)
    # the 3x3 positional grid is resampled to 2x3, the 16 px patch kernel to 8 px
    assert own["pos_embed"].shape == (1, 1 + 6, 32) and own["patch_embed.proj.weight"].shape == (32, 3, 8, 8)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        init_backbone_from_timm(model, str(tmp_path / "missing.safetensors"))
    wide = SegmentationViT(SegModelConfig(num_classes=4, image_size=(16, 16), embed_dim=64, depth=2, num_heads=2))
    with pytest.raises(ValueError, match="width 32 differs"):
        init_backbone_from_timm(wide, str(tmp_path / "vit.safetensors"))


def test_config_errors():
    with pytest.raises(ConfigError, match="image_size: width 30 is not a positive multiple of patch_size 8"):
        SegConfig(image_size=(32, 30))
    with pytest.raises(ConfigError, match="model_size"):
        SegConfig(model_size="huge")
    assert main(["--image_size", "[32, 30]"]) == 2


# --- training ----------------------------------------------------------------------------------

def test_smoke_training_on_ground_truth_writes_its_outputs(full_run):
    cfg = SegConfig.from_json(full_run / "config.json")
    assert cfg.masks == "ground_truth" and cfg.epochs == 1 and cfg.image_size == (SIZE, SIZE)
    log = [json.loads(line) for line in (full_run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1]
    metrics = json.loads((full_run / "metrics.json").read_text())
    assert metrics["supervision"] == "full" and metrics["train_images"] == 32 and metrics["val_images"] == 16
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["pixel_acc"] <= 1.0
    assert list(metrics["per_class_iou"])[0] == "background" and len(metrics["per_class_iou"]) == NUM_MASK_CLASSES
    present = [v for v in metrics["per_class_iou"].values() if v is not None]
    assert math.isclose(metrics["miou"], sum(present) / len(present))
    assert metrics["miou"] == log[-1]["val_miou"] and metrics["pixel_acc"] == log[-1]["val_pixel_acc"]

    # the checkpoint rebuilds the same model and reproduces the val numbers
    model, train_config = load_segmentation_model(full_run / "model")
    assert train_config == cfg.to_dict() and model.config.num_classes == NUM_MASK_CLASSES
    val_set = build_dataset("shapes", cfg.data_root, "val", image_size=SIZE)
    val_loss, cm = evaluate_segmentation(model, DataLoader(val_set, batch_size=8))
    assert math.isclose(cm.miou(), metrics["miou"], rel_tol=1e-9)
    assert math.isclose(val_loss, metrics["val_loss"], rel_tol=1e-4)


def test_perfect_pseudo_masks_reproduce_ground_truth_training(full_run, data_root, mask_dirs, tmp_path):
    full = json.loads((full_run / "metrics.json").read_text())
    pseudo = train_segmentation(_cfg(data_root, tmp_path / "copies", masks=str(mask_dirs["copies"])),
                                show_progress=False)
    assert pseudo["supervision"] == "pseudo" and (tmp_path / "copies" / "model" / "model.safetensors").is_file()
    for key in ("miou", "pixel_acc", "per_class_iou", "train_loss", "val_loss"):
        assert pseudo[key] == full[key], key
    assert compare_pseudo_vs_full(pseudo, full)["miou_ratio"] == 1.0

    # relabelled pseudo-masks train towards other targets: the substitution reaches the loss
    relabelled = train_segmentation(_cfg(data_root, tmp_path / "relabelled", masks=str(mask_dirs["relabelled"])),
                                    show_progress=False)
    assert relabelled["train_loss"] != full["train_loss"] and relabelled["miou"] != full["miou"]


def test_compare_pseudo_vs_full():
    pseudo = {"miou": 0.3, "pixel_acc": 0.6, "dataset": "shapes", "supervision": "pseudo"}
    full = {"miou": 0.6, "pixel_acc": 0.8, "dataset": "shapes", "supervision": "full"}
    result = compare_pseudo_vs_full(pseudo, full)
    assert result["pseudo"] == {"miou": 0.3, "pixel_acc": 0.6}
    assert result["full_supervision"] == {"miou": 0.6, "pixel_acc": 0.8}
    assert result["miou_ratio"] == pytest.approx(0.5) and result["pixel_acc_ratio"] == pytest.approx(0.75)
    assert compare_pseudo_vs_full(pseudo, {**full, "miou": 0.0})["miou_ratio"] is None
    with pytest.raises(ValueError, match="differ in 'dataset'"):
        compare_pseudo_vs_full(pseudo, {**full, "dataset": "voc"})
    with pytest.raises(ValueError, match="expected a pseudo-mask run and a ground-truth run"):
        compare_pseudo_vs_full(full, pseudo)
    with pytest.raises(ValueError, match="full_metrics: 'miou' must be a finite number"):
        compare_pseudo_vs_full(pseudo, {**full, "miou": float("nan")})


def test_pseudo_masks_written_by_evaluation_train_a_model(data_root, tmp_path):
    # the whole chain on a smoke classifier: train → evaluate_run (writes PNGs) → segmentation on them
    from kyam_lib.config import TrainConfig
    from kyam_lib.evaluate import EvalConfig, evaluate_run
    from kyam_lib.train import train

    run = tmp_path / "classifier"
    train(TrainConfig(dataset="shapes", data_root=str(data_root), model_size="tiny", image_size=(SIZE, SIZE),
                      epochs=1, batch_size=16, warmup_epochs=0.5, out_dir=str(run), device="cpu"),
          show_progress=False)
    evaluate_run(EvalConfig(run_dir=str(run), device="cpu"))
    mask_dir = run / "eval" / "pseudo_masks" / "train"
    assert len(list(mask_dir.glob("*.png"))) == 32
    metrics = train_segmentation(_cfg(data_root, tmp_path / "seg", masks=str(mask_dir)), show_progress=False)
    assert metrics["supervision"] == "pseudo" and 0.0 <= metrics["miou"] <= 1.0
    # the evaluation's choices travel with the result: the training masks drew the image labels
    assert metrics["pseudo_mask_source"]["class_source"] == {"train": "labels", "val": "predicted"}
    assert metrics["pseudo_mask_source"]["run_dir"] == str(run)


def test_all_ignored_pseudo_masks_give_zero_loss_not_nan(data_root, tmp_path):
    masks = tmp_path / "void"
    for index in range(32):
        save_pseudo_mask(np.full((SIZE, SIZE), 255, np.uint8), masks / f"train_{index:06d}.png")
    metrics = train_segmentation(_cfg(data_root, tmp_path / "out", masks=str(masks)), show_progress=False)
    assert metrics["train_loss"] == 0.0 and math.isfinite(metrics["val_loss"])
