"""Segmentation runs: exact resume after SIGKILL, DeepLabV3 training/resume/pretrained encoder, predictions."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.models import resnet50

from kyam_lib.checkpoint import latest_checkpoint
from train_helpers import SMOKE_SHAPES
from kyam_lib.segmentation import (DeepLabSegmenter, SegConfig, SegModelConfig, build_seg_model,
                                   init_deeplab_backbone, load_segmentation_model, predict_masks, train_segmentation)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical with the OMP_NUM_THREADS=1 subprocess
    yield
    torch.set_num_threads(threads)


def _cfg(data_root, out_dir, **changes) -> SegConfig:
    values = dict(dataset="shapes", data_root=str(data_root), image_size=(32, 32), model_size="tiny", patch_size=8,
                  epochs=3, batch_size=8, max_train_images=32, max_val_images=16, lr=1e-3, warmup_epochs=0.5,
                  device="cpu", out_dir=str(out_dir))
    return SegConfig(**{**values, **changes})


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "train_seconds"}


def _log(out_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "epoch_seconds"}
            for line in (out_dir / "log.jsonl").read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> bool:
    mine, theirs = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_sigkill_after_an_epoch_then_resume_matches_uninterrupted(data_root, tmp_path):
    reference = train_segmentation(_cfg(data_root, tmp_path / "reference"), show_progress=False)
    cfg = _cfg(data_root, tmp_path / "killed")
    cfg.to_json(tmp_path / "seg.json")
    out = Path(cfg.out_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "kyam_lib.segmentation", "--config", str(tmp_path / "seg.json")],
                                   cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "epoch_0001").is_dir():
            assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("no checkpoint within 300 s")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()
    assert 1 <= int(latest_checkpoint(out).name.split("_")[1]) < 3

    resumed = train_segmentation(cfg, resume=True, show_progress=False)
    assert _without_timing(resumed) == _without_timing(reference)
    assert _log(out) == _log(tmp_path / "reference")
    assert _same_weights(out, tmp_path / "reference")


def test_deeplab_trains_resumes_and_predicts_at_image_size(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "deeplab", architecture="deeplabv3_resnet50", epochs=2, batch_size=4,
               max_train_images=8, max_val_images=4, checkpoint_every=1, keep_checkpoints=3)
    reference = train_segmentation(cfg, show_progress=False)
    out = Path(cfg.out_dir)
    model, stored = load_segmentation_model(out / "model")
    assert isinstance(model, DeepLabSegmenter) and stored["architecture"] == "deeplabv3_resnet50"
    assert model.eval()(torch.randn(1, 3, 40, 24)).shape == (1, 7, 40, 24)
    reference_weights = load_file(str(out / "model" / "model.safetensors"))
    # what a kill during epoch 2 leaves: epoch 1's checkpoint only
    (out / "metrics.json").unlink()
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "epoch_0002")
    resumed = train_segmentation(cfg, resume=True, show_progress=False)
    assert _without_timing(resumed) == _without_timing(reference) and resumed["epochs"] == 2
    again = load_file(str(out / "model" / "model.safetensors"))
    assert all(torch.equal(again[k], reference_weights[k]) for k in reference_weights)

    result = predict_masks(out, split="val", device="cpu")
    masks = sorted(Path(result["mask_dir"]).glob("*.png"))
    assert result["images"] == len(masks) == SMOKE_SHAPES["num_val"]  # the whole split, not the subset trained on
    with Image.open(masks[0]) as mask:
        assert mask.mode == "P" and mask.size == (32, 32)  # the shapes images are 32x32
        assert np.asarray(mask).max() < 7


def test_deeplab_encoder_from_a_local_resnet_file(tmp_path):
    torch.manual_seed(0)
    source = resnet50()
    path = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_seg_model(SegModelConfig(architecture="deeplabv3_resnet50", num_classes=3))
    assert init_deeplab_backbone(model, str(path)) == []
    assert torch.equal(model.net.backbone.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    assert torch.equal(model.net.backbone.bn1.running_var, source.bn1.running_var)
    # 13 Sentinel-2 bands: the RGB filters are adapted to the first conv
    multispectral = build_seg_model(SegModelConfig(architecture="deeplabv3_resnet50", num_classes=3, in_channels=13))
    init_deeplab_backbone(multispectral, str(path))
    assert multispectral.net.backbone.conv1.weight.shape == (64, 13, 7, 7)
    deeper = build_seg_model(SegModelConfig(architecture="deeplabv3_resnet101", num_classes=3))
    with pytest.raises(ValueError, match="lack .* tensors of the ResNet encoder"):
        init_deeplab_backbone(deeper, str(path))
    with pytest.raises(ValueError, match="neither a local file nor a ResNet101_Weights name"):
        init_deeplab_backbone(deeper, "NO_SUCH_WEIGHTS")
