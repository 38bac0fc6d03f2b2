"""SegConfig (one segmentation run) and SegModelConfig (what rebuilds a segmentation model)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..config import ConfigBase, ConfigError, DataConfig, RunConfig
from ..method.model import model_size

__all__ = ["GROUND_TRUTH", "ARCHITECTURES", "PRESET_SEGMENTERS", "INHERITED_DATA_FIELDS", "SegConfig", "SegModelConfig",
           "seg_model_config_for"]

GROUND_TRUTH = "ground_truth"
Architecture = Literal["vit", "deeplabv3_resnet50", "deeplabv3_resnet101"]
ARCHITECTURES: tuple[str, ...] = ("vit", "deeplabv3_resnet50", "deeplabv3_resnet101")
# The segmenter each training preset pairs with: the small ViT decoder on the embedded data (it
# trains in minutes on 2 CPU cores), DeepLabV3-ResNet101 for the paper's protocol on real data.
PRESET_SEGMENTERS: dict[str, str] = {"smoke": "vit", "quick": "vit", "full": "vit", "paper": "deeplabv3_resnet101"}
# The data a segmentation run takes over from the classifier run whose pseudo-masks it trains on:
# every DataConfig field but which training images it draws and their augmentation (its own).
INHERITED_DATA_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(DataConfig)
                                               if field.name not in ("max_train_images", "augment"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegConfig(RunConfig):
    """One segmentation run: the shared RunConfig fields (data, optimisation, bookkeeping) and the
    segmenter's own. Flat, so it is a papermill parameters cell.

    The data fields are those of the classifier run the pseudo-masks come from: train_split is the
    split they were made for; val is always scored against ground truth; augment (random resized
    crop + flip) is applied to image and mask together.
    """

    # data
    masks: str = GROUND_TRUTH            # "ground_truth", or a folder of <id>.png pseudo-masks
    # model
    architecture: Architecture = "vit"  # vit: timm ViT + light decoder; deeplabv3_*: torchvision DeepLabV3
    model_size: Literal["tiny", "small", "base"] = "small"   # vit only
    patch_size: int = 8                  # vit only (the image size must be a multiple of it)
    decoder: Literal["linear", "conv"] = "conv"   # vit: conv = one 3x3 conv block before the 1x1 classifier
    drop_path_rate: float = 0.0
    # vit: timm model name or local weight file. deeplab: a torchvision ResNet weights name
    # ("IMAGENET1K_V2", needs the hub) or a local ResNet state-dict file (.pth / .safetensors).
    pretrained: str = ""
    # optimisation: RunConfig's lr 5e-4 and 2 warm-up epochs. From scratch on the 64 px shapes data,
    # lr 1e-3 collapsed to all-background; 5e-4 leaves that plateau after about 15 epochs.
    epochs: int = 30
    # bookkeeping
    out_dir: str = "runs/segmentation"

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
