"""Downstream segmentation: a ViT + light decoder trained on pseudo-masks or on ground truth.

The paper's last step: the pseudo-masks become training targets of an ordinary segmentation
model, whose val mIoU is compared with the same model trained on the ground-truth masks (full
supervision). Both runs use the same backbone size as the classifier, the same data, epochs and
seed; the val split is always scored against ground truth.

    python -m kyam_lib.segmentation --masks ground_truth --out runs/seg_full
    python -m kyam_lib.segmentation --masks runs/default/eval/pseudo_masks/train --out runs/seg_pseudo
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from tqdm.auto import tqdm

from .config import ConfigBase, ConfigError, parse_overrides
from .data import (IGNORE_INDEX, DatasetError, DatasetNotFoundError, KyamDataset, build_dataset, default_data_root,
                   ensure_dataset)
from .checkpoint import read_weights_dir, write_weights_dir
from .io import append_jsonl, read_json, remove_run_outputs, write_json
from .metrics import ConfusionMatrix
from .model import MODEL_SIZES
from .pretrained import load_timm_state_dict
from .pseudo_masks import load_mask_png
from .train import SeededAugmentation, dataset_info, make_scheduler, resolve_device, seed_everything

__all__ = [
    "SegConfig",
    "SegModelConfig",
    "SegmentationViT",
    "PseudoMaskDataset",
    "seg_model_config_for",
    "init_backbone_from_timm",
    "build_seg_datasets",
    "mask_class_names",
    "evaluate_segmentation",
    "train_segmentation",
    "save_segmentation_model",
    "load_segmentation_model",
    "compare_pseudo_vs_full",
    "main",
]

GROUND_TRUTH = "ground_truth"
FORMAT = "kyam-segmentation-v1"
# Outputs of a run that a new run in the same out_dir replaces; other files there are left alone.
RUN_OUTPUTS = ("config.json", "log.jsonl", "metrics.json", "model")


# ------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------
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
    num_workers: int = 0
    # model
    model_size: Literal["tiny", "small", "base"] = "small"
    patch_size: int = 8
    decoder: Literal["linear", "conv"] = "conv"   # conv: one 3x3 conv block before the 1x1 classifier
    drop_path_rate: float = 0.0
    pretrained: str = ""                 # timm model name or local weight file; "" = random init
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
    deterministic: bool = True

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("SegConfig.epochs and batch_size must be positive")
        for axis, size in zip(("height", "width"), self.image_size):
            if size <= 0 or size % self.patch_size:
                raise ConfigError(
                    f"SegConfig.image_size: {axis} {size} is not a positive multiple of "
                    f"patch_size {self.patch_size} (image_size={list(self.image_size)})")
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
    embed_dim, depth, num_heads = MODEL_SIZES[cfg.model_size]
    return SegModelConfig(num_classes=num_classes, in_channels=in_channels, image_size=cfg.image_size,
                          patch_size=cfg.patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                          drop_path_rate=cfg.drop_path_rate, decoder=cfg.decoder)


# ------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
class PseudoMaskDataset(Dataset):
    """A kyam dataset whose masks are replaced by ``<mask_dir>/<id>.png`` pseudo-masks.

    Images, labels and the joint transforms are those of `dataset`; the pseudo-mask goes through
    the same transform as the image (same crop, same flip). A pseudo-mask of another size than its
    image (evaluation writes them at the classifier's input size) is first resized to the image
    with nearest, undoing the plain resize it was made at.
    """

    def __init__(self, dataset: KyamDataset, mask_dir: str | os.PathLike) -> None:
        self.dataset = dataset
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise DatasetNotFoundError(f"{self.mask_dir}: pseudo-mask folder not found")
        self.class_names = dataset.class_names
        self.has_background = dataset.has_background
        self.num_channels = dataset.num_channels
        self.multi_label = dataset.multi_label
        self.ids = dataset.ids

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_mask_classes(self) -> int:
        return self.dataset.num_mask_classes

    def mask_path(self, index: int) -> Path:
        return self.mask_dir / f"{self.dataset.ids[index]}.png"

    def missing(self, indices: Sequence[int] | None = None) -> list[Path]:
        """Pseudo-mask files that do not exist, for `indices` (default: every item)."""
        indices = range(len(self)) if indices is None else indices
        return [path for path in map(self.mask_path, indices) if not path.is_file()]

    def read_mask(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        """The checked (H, W) int64 pseudo-mask of item `index`, at image size `shape`."""
        path = self.mask_path(index)
        if not path.is_file():
            raise DatasetNotFoundError(f"{path}: pseudo-mask file not found for image id {self.dataset.ids[index]!r}")
        try:
            mask = load_mask_png(path)
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: unreadable pseudo-mask ({err})") from err
        bad = (mask >= self.num_mask_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            values = sorted(int(v) for v in np.unique(mask[bad]))[:10]
            raise DatasetError(f"{path}: pseudo-mask value(s) {values} outside the class list "
                               f"(valid: 0..{self.num_mask_classes - 1} and {IGNORE_INDEX})")
        if mask.shape != tuple(shape):
            resized = Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
            mask = np.asarray(resized)
        return mask.astype(np.int64)

    def __getitem__(self, index: int) -> dict:
        base = self.dataset
        image, gt_mask = base.load(index)
        labels = base.image_labels(index, gt_mask)  # image-level labels: the weak supervision itself
        mask = self.read_mask(index, image.shape[:2])
        size = base.image_size or mask.shape
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        mask_t = tv_tensors.Mask(torch.from_numpy(mask))
        image_t, mask_t = base.transform_for(tuple(size))(image_t, mask_t)
        return {
            "image": image_t.as_subclass(Tensor).float(),
            "mask": mask_t.as_subclass(Tensor).long(),
            "labels": torch.from_numpy(labels),
            "id": base.ids[index],
            "index": index,
        }


def _seeded_subset(dataset: Dataset, limit: int, seed: int) -> Dataset:
    """The same fixed subset rule as kyam_lib.train, so both see the same images for one seed."""
    if limit <= 0 or limit >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    return Subset(dataset, sorted(order.tolist()))


def build_seg_datasets(cfg: SegConfig) -> tuple[Dataset, Dataset]:
    """(train, val): train masks from `cfg.masks`, val masks always ground truth."""
    root = ensure_dataset(cfg.dataset, Path(cfg.data_root) if cfg.data_root else default_data_root())
    train_set: Dataset = build_dataset(cfg.dataset, root, cfg.train_split, image_size=cfg.image_size,
                                       augment=cfg.augment)
    if cfg.masks != GROUND_TRUTH:
        train_set = PseudoMaskDataset(train_set, cfg.masks)
    train_set = _seeded_subset(train_set, cfg.max_train_images, cfg.seed)
    if cfg.masks != GROUND_TRUTH:
        pseudo = dataset_info(train_set)  # the PseudoMaskDataset under the Subset
        missing = pseudo.missing(train_set.indices if isinstance(train_set, Subset) else None)
        if missing:
            raise DatasetNotFoundError(
                f"{missing[0]}: pseudo-mask file not found ({len(missing)} of {len(train_set)} training images "
                f"of split {cfg.train_split!r} have none in {pseudo.mask_dir})")
    val_set = build_dataset(cfg.dataset, root, cfg.val_split, image_size=cfg.image_size, augment=False)
    return train_set, _seeded_subset(val_set, cfg.max_val_images, cfg.seed)


def mask_class_names(dataset: Dataset) -> list[str]:
    """Names of the mask values 0..K-1: "background" first where the dataset has one."""
    info = dataset_info(dataset)
    return (["background"] if info.has_background else []) + list(info.class_names)


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------
def save_segmentation_model(directory: str | os.PathLike, model: SegmentationViT, *,
                            train_config: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (config in its metadata) and ``config.json``; the directory is renamed into place."""
    return write_weights_dir(directory, model.state_dict(), fmt=FORMAT, model_config=model.config.to_dict(),
                             train_config=train_config)


def load_segmentation_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                            ) -> tuple[SegmentationViT, dict[str, Any] | None]:
    """(model rebuilt from the checkpoint's own config, the SegConfig fields it was trained with)."""
    weights, stored, state, train_config = read_weights_dir(path, fmt=FORMAT, what="kyam segmentation checkpoint")
    model = SegmentationViT(SegModelConfig.from_dict(stored, source=str(weights)))
    model.load_state_dict(state)
    return model.to(map_location), train_config


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
def _make_optimizer(model: SegmentationViT, cfg: SegConfig) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95); tokens, positional embeddings, norms and biases without weight decay."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or name in skip else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


@torch.no_grad()
def evaluate_segmentation(model: SegmentationViT, loader: DataLoader, *, amp_dtype: torch.dtype | None = None
                          ) -> tuple[float, ConfusionMatrix]:
    """(mean cross-entropy per valid pixel, confusion matrix) over `loader`, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    cm = ConfusionMatrix(model.config.num_classes, IGNORE_INDEX, device=device)
    loss_sum, pixels = 0.0, 0
    for batch in loader:
        images, targets = batch["image"].to(device), batch["mask"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        loss_sum += float(F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"))
        pixels += int((targets != IGNORE_INDEX).sum())
        cm.update(logits.argmax(dim=1), targets)
    return loss_sum / max(pixels, 1), cm


def _pseudo_mask_provenance(mask_dir: Path) -> dict[str, Any]:
    """What the evaluation that wrote `<run>/eval/pseudo_masks/<split>` recorded (class source etc.)."""
    summary = mask_dir.parent.parent / "metrics.json"
    if not summary.is_file():
        return {}
    try:
        recorded = read_json(summary)
    except ValueError:
        return {}
    keys = ("run_dir", "dataset", "class_source", "rule", "background_score", "blocks", "head_weighting")
    return {k: recorded[k] for k in keys if isinstance(recorded, dict) and k in recorded}


def train_segmentation(cfg: SegConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Train one segmentation run; writes config.json, log.jsonl, model/ and metrics.json under cfg.out_dir.

    The reported numbers are those of the last epoch (no checkpoint is picked on val).
    """
    started = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic, device)
    amp_dtype = torch.bfloat16 if (cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")) else None

    train_set, val_set = build_seg_datasets(cfg)
    info = dataset_info(train_set)
    class_names = mask_class_names(train_set)
    model = SegmentationViT(seg_model_config_for(cfg, num_classes=len(class_names), in_channels=info.num_channels))
    if cfg.pretrained:
        init_backbone_from_timm(model, cfg.pretrained)
    model.to(device)

    # Each item's crop and flip come from a seed keyed by (seed, epoch, index), as in kyam_lib.train,
    # so the pseudo-mask and ground-truth runs of one seed see the same augmented images.
    train_data = SeededAugmentation(train_set, seed=cfg.seed)
    loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
                        pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    if len(loader) == 0:
        raise ConfigError(f"SegConfig.batch_size {cfg.batch_size} exceeds the {len(train_set)} training images")
    optimizer = _make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(loader))  # reads epochs, warmup_epochs, min_lr_ratio

    log_path = out_dir / "log.jsonl"
    record: dict[str, Any] = {}
    cm = ConfusionMatrix(len(class_names), IGNORE_INDEX)
    for epoch in range(cfg.epochs):
        model.train()
        train_data.set_epoch(epoch)
        epoch_started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for batch in tqdm(loader, desc=f"segmentation epoch {epoch + 1}/{cfg.epochs}", leave=False,
                          disable=not show_progress, mininterval=2.0):
            images = batch["image"].to(device, non_blocking=True)
            targets = batch["mask"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)
            # Mean over valid pixels; a batch whose pixels are all ignored gives 0, not NaN.
            valid = (targets != IGNORE_INDEX).sum().clamp_min(1)
            loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum") / valid
            if not torch.isfinite(loss):
                raise RuntimeError(f"{out_dir}: non-finite segmentation loss {float(loss)} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
        val_loss, cm = evaluate_segmentation(model, val_loader, amp_dtype=amp_dtype)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / len(loader),
            "lr": scheduler.get_last_lr()[0],
            "val_loss": val_loss,
            "val_miou": cm.miou(),
            "val_pixel_acc": cm.pixel_accuracy(),
            "epoch_seconds": time.perf_counter() - epoch_started,
        }
        if epoch == 0:  # nothing is written before the first epoch ends; then earlier outputs go
            remove_run_outputs(out_dir, RUN_OUTPUTS)
            cfg.to_json(out_dir / "config.json")
        append_jsonl(log_path, record)

    save_segmentation_model(out_dir / "model", model, train_config=cfg.to_dict())
    summary = cm.to_dict(class_names)
    metrics: dict[str, Any] = {
        "supervision": cfg.supervision,
        "masks": cfg.masks,
        "dataset": cfg.dataset,
        "train_split": cfg.train_split,
        "val_split": cfg.val_split,
        "image_size": list(cfg.image_size),
        "model_size": cfg.model_size,
        "pretrained": cfg.pretrained,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "train_images": len(train_set),
        "val_images": len(val_set),
        "miou": summary["miou"],
        "pixel_acc": summary["pixel_accuracy"],
        "per_class_iou": summary["per_class_iou"],
        "val_loss": record["val_loss"],
        "train_loss": record["train_loss"],
        "train_seconds": time.perf_counter() - started,
    }
    if cfg.supervision == "pseudo":
        metrics["pseudo_mask_source"] = _pseudo_mask_provenance(Path(cfg.masks))
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def compare_pseudo_vs_full(pseudo_metrics: dict[str, Any], full_metrics: dict[str, Any]) -> dict[str, Any]:
    """Val mIoU (and pixel accuracy) of the pseudo-mask model, of the fully supervised one, and their ratios.

    Both must come from the same data (dataset, val split and image size, where recorded).
    """
    for name, metrics in (("pseudo_metrics", pseudo_metrics), ("full_metrics", full_metrics)):
        for key in ("miou", "pixel_acc"):
            value = metrics.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: {key!r} must be a finite number, got {value!r}")
    for key in ("dataset", "val_split", "image_size", "val_images"):
        if key in pseudo_metrics and key in full_metrics and pseudo_metrics[key] != full_metrics[key]:
            raise ValueError(f"pseudo and full runs differ in {key!r}: {pseudo_metrics[key]!r} vs "
                             f"{full_metrics[key]!r}; compare runs on the same data")
    if pseudo_metrics.get("supervision", "pseudo") != "pseudo" or full_metrics.get("supervision", "full") != "full":
        raise ValueError(f"expected a pseudo-mask run and a ground-truth run, got supervision "
                         f"{pseudo_metrics.get('supervision')!r} and {full_metrics.get('supervision')!r}")

    def ratio(numerator: float, denominator: float) -> float | None:
        return numerator / denominator if denominator > 0 else None

    pick = lambda m: {"miou": float(m["miou"]), "pixel_acc": float(m["pixel_acc"])}  # noqa: E731
    return {
        "pseudo": pick(pseudo_metrics),
        "full_supervision": pick(full_metrics),
        "miou_ratio": ratio(pseudo_metrics["miou"], full_metrics["miou"]),
        "pixel_acc_ratio": ratio(pseudo_metrics["pixel_acc"], full_metrics["pixel_acc"]),
    }


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------
def config_from_args(argv: Sequence[str] | None = None) -> SegConfig:
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.segmentation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file of SegConfig fields")
    parser.add_argument("--out", help="output directory (SegConfig.out_dir)")
    args, rest = parser.parse_known_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        loaded = read_json(args.config)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a JSON object of SegConfig fields")
        SegConfig.from_dict({**SegConfig().to_dict(), **loaded}, source=args.config)  # names the file on error
        values.update(loaded)
    values.update(parse_overrides(rest))
    if args.out:
        values["out_dir"] = args.out
    return SegConfig.from_dict({**SegConfig().to_dict(), **values})


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config_from_args(argv)
        metrics = train_segmentation(cfg)
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {cfg.out_dir}/metrics.json  {metrics['supervision']} supervision  "
          f"val mIoU {metrics['miou']:.3f}  pixel acc {metrics['pixel_acc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
