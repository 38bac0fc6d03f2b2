"""SegConfig (one segmentation run) and SegModelConfig (what rebuilds a segmentation model)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..config import ConfigBase, ConfigError
from ..method.model import model_size

__all__ = ["GROUND_TRUTH", "ARCHITECTURES", "PRESET_SEGMENTERS", "SegConfig", "SegModelConfig",
           "seg_model_config_for"]

GROUND_TRUTH = "ground_truth"
Architecture = Literal["vit", "deeplabv3_resnet50", "deeplabv3_resnet101"]
ARCHITECTURES: tuple[str, ...] = ("vit", "deeplabv3_resnet50", "deeplabv3_resnet101")
# The segmenter each training preset pairs with: the small ViT decoder on the embedded data (it
# trains in minutes on 2 CPU cores), DeepLabV3-ResNet101 for the paper's protocol on real data.
PRESET_SEGMENTERS: dict[str, str] = {"smoke": "vit", "quick": "vit", "full": "vit", "paper": "deeplabv3_resnet101"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegConfig(ConfigBase):
    """One segmentation run. Flat, so it is a papermill parameters cell."""

    # data
    dataset: str = "shapes"              # any kyam dataset name
    data_root: str = ""                  # "" = $KYAM_DATA_ROOT, else <repo>/data
    train_split: str = "train"           # the split the pseudo-masks were made for
    val_split: str = "val"               # always scored against ground truth
    image_size: tuple[int, int] = (64, 64)
    masks: str = GROUND_TRUTH            # "ground_truth", or a folder of <id>.png pseudo-masks
    max_train_images: int = 0            # 0 = all; >0 takes a fixed seeded subset (as kyam_lib.train)
    max_val_images: int = 0
    augment: bool = True                 # random resized crop + flip, applied to image and mask together
    num_workers: int = 0                 # -1 = from the CPU count
    persistent_workers: bool = False
    # loader options, as TrainConfig's (kyam_lib.protocol.dataset_options)
    coco_year: int = 2014
    ade20k_other_as_class: bool = True
    dfc2020_use_s1: bool = False
    endotect_subset: Literal["all", "lower-gi"] = "all"
    split_seed: int = 0
    train_fraction: float = 0.7
    voc_split_mode: Literal["standard", "official_random"] = "standard"
    # model
    architecture: Architecture = "vit"  # vit: timm ViT + light decoder; deeplabv3_*: torchvision DeepLabV3
    model_size: Literal["tiny", "small", "base"] = "small"   # vit only
    patch_size: int = 8                  # vit only (the image size must be a multiple of it)
    decoder: Literal["linear", "conv"] = "conv"   # vit: conv = one 3x3 conv block before the 1x1 classifier
    drop_path_rate: float = 0.0
    # vit: timm model name or local weight file. deeplab: a torchvision ResNet weights name
    # ("IMAGENET1K_V2", needs the hub) or a local ResNet state-dict file (.pth / .safetensors).
    pretrained: str = ""
    # optimisation
    # From scratch on the 64 px shapes data, lr 1e-3 collapsed to all-background; 5e-4 with 2
    # warm-up epochs leaves that plateau after about 15 epochs.
    epochs: int = 30
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0               # 0 = off
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 on CUDA, off on CPU
    device: str = "auto"
    # bookkeeping
    seed: int = 0
    out_dir: str = "runs/segmentation"
    keep_checkpoints: int = 2            # resumable checkpoints/epoch_NNNN kept (the newest)
    checkpoint_every: int = 1            # epochs between them (the last epoch always has one)
    deterministic: bool = True

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ConfigError("SegConfig.epochs, batch_size and checkpoint_every must be positive")
        if self.architecture == "vit":
            for axis, size in zip(("height", "width"), self.image_size):
                if size <= 0 or size % self.patch_size:
                    raise ConfigError(
                        f"SegConfig.image_size: {axis} {size} is not a positive multiple of "
                        f"patch_size {self.patch_size} (image_size={list(self.image_size)})")
        elif self.architecture.startswith("deeplab") and self.batch_size < 2:
            raise ConfigError("SegConfig.batch_size: DeepLab's batch norm after global pooling needs at least 2")
        if not self.masks:
            raise ConfigError(f"SegConfig.masks is empty; use {GROUND_TRUTH!r} or a folder of pseudo-mask PNGs")
        if self.max_train_images < 0 or self.max_val_images < 0:
            raise ConfigError("SegConfig.max_train_images and max_val_images must be >= 0")

    @property
    def supervision(self) -> str:
        """"full" (ground-truth masks) or "pseudo"."""
        return "full" if self.masks == GROUND_TRUTH else "pseudo"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegModelConfig(ConfigBase):
    """Everything needed to rebuild a segmentation model; stored in its checkpoint."""

    architecture: Architecture = "vit"
    num_classes: int = 7                 # mask classes, background included where the data has one
    in_channels: int = 3
    image_size: tuple[int, int] = (64, 64)
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    decoder: Literal["linear", "conv"] = "conv"

    def validate(self) -> None:
        if self.architecture == "vit":
            for axis, size in zip(("height", "width"), self.image_size):
                if size <= 0 or size % self.patch_size:
                    raise ConfigError(f"SegModelConfig.image_size: {axis} {size} is not a positive multiple of "
                                      f"patch_size {self.patch_size}")
            if self.embed_dim % self.num_heads:
                raise ConfigError(f"SegModelConfig.embed_dim {self.embed_dim} is not divisible by "
                                  f"num_heads {self.num_heads}")
        if self.num_classes < 1 or self.in_channels < 1:
            raise ConfigError("SegModelConfig.num_classes and in_channels must be positive")

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size


def seg_model_config_for(cfg: SegConfig, *, num_classes: int, in_channels: int) -> SegModelConfig:
    """The model of `cfg` for a dataset with `num_classes` mask classes (background included)."""
    size = model_size(cfg.model_size)
    return SegModelConfig(architecture=cfg.architecture, num_classes=num_classes, in_channels=in_channels,
                          image_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=size.embed_dim,
                          depth=size.depth, num_heads=size.num_heads, drop_path_rate=cfg.drop_path_rate,
                          decoder=cfg.decoder)
