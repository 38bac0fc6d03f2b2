"""Named training presets: overrides on top of TrainConfig's defaults.

smoke: a tiny model on a small subset of the embedded synthetic data — seconds on CPU (tests).
quick: the tiny model on subsets of the embedded synthetic data — the default of `make reproduce`.
full:  the quick settings; `make reproduce PRESET=full` runs them for 3 seeds.
paper: the paper's settings (ViT-B/16, 200 epochs, lambda 0.01, masking 0.5) for real data on a GPU.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TRAIN_PRESETS", "SEG_PRESETS", "preset_overrides", "seg_preset_overrides"]

# quick: sized so that `make reproduce` (17 classifier runs, 2 segmentation runs) takes about
# 15 minutes on 2 CPU cores (~3 ms per training image-pass for "tiny", ~7 for "small"). The
# gates are held open for the first 4 epochs: a from-scratch ViT is at chance that long on the
# embedded data, and gates trained from the first step shut every head (TrainConfig.l0_warmup_epochs).
# No augmentation: in 10 epochs random crops slow learning down so much that the gated model is
# still at chance when its gates start training, and every head shuts (val acc 0.711 = chance);
# without them it keeps 4 of 16 heads, val acc 0.80, pseudo-mask mIoU 0.27.
_QUICK: dict[str, Any] = dict(model_size="tiny", image_size=[64, 64], patch_size=8, epochs=10, batch_size=32,
                              max_train_images=1500, max_val_images=300, warmup_epochs=0.5, lr=1e-3,
                              l0_warmup_epochs=4.0, augment=False)

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(model_size="tiny", image_size=[32, 32], patch_size=8, epochs=2, batch_size=16,
                  max_train_images=64, max_val_images=32, warmup_epochs=0.5, lr=1e-3),
    "quick": _QUICK,
    # full: the quick settings; `make reproduce PRESET=full` runs them for 3 seeds (about 3x as long).
    "full": dict(_QUICK),
    "paper": dict(model_size="base", patch_size=16, image_size=[224, 224], epochs=200, batch_size=64,
                  lr=5e-4, gate_lr_ratio=1.0, warmup_epochs=5.0, l0_weight=0.01, mask_rate=0.5,
                  pretrained=""),  # paper: 16 heads; timm ViT-B weights (12 heads) load but split differently
}


def preset_overrides(name: str) -> dict[str, Any]:
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(TRAIN_PRESETS)}")
    return dict(TRAIN_PRESETS[name])


# The downstream segmentation model's own settings per preset (SegConfig fields, plus
# `train_images`: how many of the classifier's training images get pseudo-masks and train it;
# 0 = all). Data, image size and patch size come from the classifier run.
SEG_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(epochs=2, batch_size=16, lr=1e-3, warmup_epochs=0.5, augment=False, train_images=32),
    "quick": dict(epochs=12, batch_size=32, lr=1e-3, warmup_epochs=1.0, augment=False, train_images=2000),
    "paper": dict(train_images=0),
}
SEG_PRESETS["full"] = dict(SEG_PRESETS["quick"])


def seg_preset_overrides(name: str) -> dict[str, Any]:
    if name not in SEG_PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(SEG_PRESETS)}")
    return dict(SEG_PRESETS[name])
