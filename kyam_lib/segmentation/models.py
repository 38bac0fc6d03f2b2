"""Segmentation models: a timm ViT + light decoder (CPU default), and torchvision's DeepLabV3-ResNet.

Both map (B, C, H, W) images to (B, K, H, W) mask-class logits; `build_seg_model` picks one from
`SegModelConfig.architecture`, and a checkpoint stores that config, so it rebuilds the right one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from ..checkpoint import read_weights_dir, write_weights_dir
from ..pretrained import load_timm_state_dict
from .config import SegModelConfig

__all__ = ["FORMAT", "SegmentationViT", "DeepLabSegmenter", "build_seg_model", "init_backbone_from_timm",
           "init_deeplab_backbone", "init_pretrained", "save_segmentation_model", "load_segmentation_model"]

FORMAT = "kyam-segmentation-v1"



class SegmentationViT(nn.Module):
    """timm ViT backbone + decoder on the patch grid, upsampled bilinearly to the input size.

    Decoder: the backbone's final LayerNorm, then (decoder="conv") one 3x3 conv-BN-GELU block,
    then a 1x1 conv to the mask classes.
    """

    def __init__(self, config: SegModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = VisionTransformer(
            img_size=config.image_size, patch_size=config.patch_size, in_chans=config.in_channels,
            embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate,
            num_classes=0, global_pool="", class_token=True)
        dim = config.embed_dim
        self.refine = (nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.GELU())
                       if config.decoder == "conv" else nn.Identity())
        self.classify = nn.Conv2d(dim, config.num_classes, 1)

    def patch_features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images → (B, D, H/p, W/p) normalised patch tokens."""
        B, _, H, W = images.shape
        tokens = self.backbone.forward_features(images)[:, self.backbone.num_prefix_tokens:]
        grid = (H // self.config.patch_size, W // self.config.patch_size)
        return tokens.transpose(1, 2).reshape(B, -1, *grid)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images → (B, K, H, W) mask-class logits."""
        logits = self.classify(self.refine(self.patch_features(images)))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}


@torch.no_grad()
def init_backbone_from_timm(model: SegmentationViT, source: str | dict[str, Tensor]) -> list[str]:
    """Load timm ViT weights (model name or local file) into the backbone; returns names left at init.

    Positional embeddings and the patch embedding are resampled to the model's grid and patch
    size, and the input conv is adapted to other channel counts; the classifier head is dropped.
    """
    state = load_timm_state_dict(source) if isinstance(source, str) else dict(source)
    backbone = model.backbone
    if "pos_embed" in state and state["pos_embed"].shape[-1] != model.config.embed_dim:
        raise ValueError(f"pretrained {source if isinstance(source, str) else 'state'}: width "
                         f"{state['pos_embed'].shape[-1]} differs from the model's embed_dim {model.config.embed_dim}")
    state = checkpoint_filter_fn(state, backbone)
    weight = state.get("patch_embed.proj.weight")
    if weight is not None and weight.shape[1] != model.config.in_channels:
        state["patch_embed.proj.weight"] = adapt_input_conv(model.config.in_channels, weight)
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm."))}
    own = backbone.state_dict()
    for name, value in state.items():
        if name in own and own[name].shape != value.shape:
            raise ValueError(f"pretrained {name} has shape {tuple(value.shape)}, "
                             f"the backbone needs {tuple(own[name].shape)}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"pretrained weights hold {len(unexpected)} tensors the backbone does not have, "
                         f"e.g. {sorted(unexpected)[:5]} (depth or architecture differ)")
    return sorted(f"backbone.{name}" for name in missing)

_DEEPLABS = {"deeplabv3_resnet50": (deeplabv3_resnet50, ResNet50_Weights),
             "deeplabv3_resnet101": (deeplabv3_resnet101, ResNet101_Weights)}


class DeepLabSegmenter(nn.Module):
    """torchvision DeepLabV3 (ResNet encoder, output stride 8, ASPP head), logits at the input size.

    Built without weights; `init_deeplab_backbone` loads ImageNet ResNet weights into the encoder.
    Other channel counts (Sentinel-2) replace the first conv.
    """

    def __init__(self, config: SegModelConfig) -> None:
        super().__init__()
        self.config = config
        builder, _ = _DEEPLABS[config.architecture]
        self.net = builder(weights=None, weights_backbone=None, num_classes=config.num_classes, aux_loss=False)
        if config.in_channels != 3:
            self.net.backbone.conv1 = nn.Conv2d(config.in_channels, 64, kernel_size=7, stride=2, padding=3,
                                                bias=False)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images → (B, K, H, W) mask-class logits."""
        return self.net(images)["out"]

    def no_weight_decay(self) -> set[str]:
        return set()


def build_seg_model(config: SegModelConfig) -> nn.Module:
    return SegmentationViT(config) if config.architecture == "vit" else DeepLabSegmenter(config)


def _read_state_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weight file not found")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch/safetensors raise many types for a bad file
        raise ValueError(f"{path}: not a readable weight file ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


@torch.no_grad()
def init_deeplab_backbone(model: DeepLabSegmenter, source: str | dict[str, Tensor]) -> list[str]:
    """Load ImageNet ResNet weights into the encoder: a local state-dict file, a state dict, or a
    torchvision weights name of the model's ResNet (e.g. "IMAGENET1K_V2"; needs the hub). Returns
    the encoder tensors left at their init: none, as a ResNet of another depth is an error."""
    if isinstance(source, dict):
        state = dict(source)
    elif Path(os.path.expanduser(source)).suffix or Path(os.path.expanduser(source)).exists():
        state = _read_state_file(Path(os.path.expanduser(source)))
    else:
        _, weights_enum = _DEEPLABS[model.config.architecture]
        if source not in weights_enum.__members__:
            raise ValueError(f"{source!r} is neither a local file nor a {weights_enum.__name__} name "
                             f"({', '.join(weights_enum.__members__)})")
        state = weights_enum[source].get_state_dict(progress=False)  # needs a reachable hub or a filled cache
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    backbone = model.net.backbone
    if "conv1.weight" in state and state["conv1.weight"].shape[1] != model.config.in_channels:
        state["conv1.weight"] = adapt_input_conv(model.config.in_channels, state["conv1.weight"])
    own = backbone.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"pretrained weights hold {len(unexpected)} tensors the ResNet encoder does not have, "
                         f"e.g. {unexpected[:5]} (another architecture?)")
    for name, value in state.items():
        if own[name].shape != value.shape:
            raise ValueError(f"pretrained {name} has shape {tuple(value.shape)}, the encoder needs "
                             f"{tuple(own[name].shape)} (another ResNet depth?)")
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"pretrained weights lack {len(missing)} tensors of the ResNet encoder, e.g. {missing[:3]} "
                         f"(ResNet-50 weights for a {model.config.architecture} model?)")
    backbone.load_state_dict(state)
    return []


def init_pretrained(model: nn.Module, source: str) -> list[str]:
    """The architecture's initialisation from `source` (see SegConfig.pretrained)."""
    if isinstance(model, DeepLabSegmenter):
        return init_deeplab_backbone(model, source)
    return init_backbone_from_timm(model, source)


def save_segmentation_model(directory: str | os.PathLike, model: nn.Module, *,
                            train_config: dict[str, Any] | None = None,
                            training_state: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (config in its metadata) and ``config.json`` (+ training state), atomically."""
    return write_weights_dir(directory, model.state_dict(), fmt=FORMAT, model_config=model.config.to_dict(),
                             train_config=train_config, training_state=training_state)


def load_segmentation_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                            ) -> tuple[nn.Module, dict[str, Any] | None]:
    """(model rebuilt from the checkpoint's own config, the SegConfig fields it was trained with)."""
    weights, stored, state, train_config = read_weights_dir(path, fmt=FORMAT, what="kyam segmentation checkpoint")
    model = build_seg_model(SegModelConfig.from_dict(stored, source=str(weights)))
    model.load_state_dict(state)
    return model.to(map_location), train_config
