"""Training a segmentation model on pseudo-masks or ground truth, with exact resume (as kyam_lib.train).

Outputs in out_dir: config.json, log.jsonl (one line per epoch), checkpoints/epoch_NNNN (weights,
optimizer, scheduler, epoch, RNG states; every checkpoint_every epochs and after the last, the
newest keep_checkpoints kept), model/ (final weights) and metrics.json (written last). Nothing is
written before the first epoch ends. resume=True continues from the newest checkpoint; on CPU with
deterministic=True a resumed run ends with the metrics and weights of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..checkpoint import (CheckpointError, epoch_checkpoints, latest_checkpoint, load_training_state,
                          read_weights_dir, remove_stale_temporaries)
from ..config import ConfigError
from ..data import IGNORE_INDEX
from ..io import append_jsonl, atomic_write, read_json, remove_run_outputs, write_json
from ..method.metrics import ConfusionMatrix
from ..run_data import SeededAugmentation, dataset_info
from ..runtime import loader_settings, resolve_device, seed_everything
from ..train import FiniteCheck, LossFn, make_scheduler, train_step
from .config import SegConfig, SegModelConfig, seg_model_config_for
from .data import build_seg_datasets, mask_class_names
from .models import FORMAT, build_seg_model, init_pretrained, save_segmentation_model

__all__ = ["evaluate_segmentation", "train_segmentation", "compare_pseudo_vs_full", "RUN_OUTPUTS"]

# Outputs of a run that a new (not resumed) run in the same out_dir replaces; other files are left alone.
RUN_OUTPUTS = ("config.json", "log.jsonl", "metrics.json", "checkpoints", "model")


def _make_optimizer(model: nn.Module, cfg: SegConfig) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95); tokens, positional embeddings, norms and biases without weight decay."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or name in skip else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: DataLoader, *, amp_dtype: torch.dtype | None = None
                          ) -> tuple[float, ConfusionMatrix]:
    """(mean cross-entropy per valid pixel, confusion matrix) over `loader`, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    cm = ConfusionMatrix(model.config.num_classes, IGNORE_INDEX, device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    pixels = torch.zeros((), device=device, dtype=torch.int64)
    for batch in loader:  # sums stay on the device: one host sync per split, not per batch
        images, targets = batch["image"].to(device), batch["mask"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum").double()
        pixels += (targets != IGNORE_INDEX).sum()
        cm.update(logits.argmax(dim=1), targets)
    return float(loss_sum) / max(int(pixels), 1), cm


def _pseudo_mask_provenance(mask_dir: Path) -> dict[str, Any]:
    """What the evaluation that wrote `<run>/eval/pseudo_masks/<split>` recorded (oracle classes etc.)."""
    summary = mask_dir.parent.parent / "metrics.json"
    if not summary.is_file():
        return {}
    try:
        recorded = read_json(summary)
    except ValueError:
        return {}
    keys = ("run_dir", "dataset", "oracle", "class_source", "rule", "background_score", "blocks", "head_weighting")
    return {k: recorded[k] for k in keys if isinstance(recorded, dict) and k in recorded}


def _segmentation_loss(model: nn.Module) -> LossFn:
    """Cross-entropy per valid pixel; a batch whose pixels are all ignored gives 0, not NaN."""
    device = next(model.parameters()).device

    def loss_fn(batch: dict[str, Any], forward_context) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["image"].to(device, non_blocking=True)
        targets = batch["mask"].to(device, non_blocking=True)
        with forward_context():
            logits = model(images)
        valid = (targets != IGNORE_INDEX).sum().clamp_min(1)
        loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum") / valid
        return loss, loss.detach()

    return loss_fn


class _SegmentationCheck(FiniteCheck):
    """A non-finite loss stops the run at once on the CPU; on a GPU the epoch's sum is checked (no sync per step)."""

    def __init__(self, *, out_dir: Path, epoch: int, device: torch.device) -> None:
        self.out_dir, self.epoch, self.device = out_dir, epoch, device

    def loss(self, loss: torch.Tensor) -> None:
        if self.device.type != "cuda" and not torch.isfinite(loss):
            raise RuntimeError(f"{self.out_dir}: non-finite segmentation loss {float(loss)} at epoch {self.epoch + 1}")


def _rng_state(loader_generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "loader": loader_generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], loader_generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _resume_weights(checkpoint: Path, model_config: SegModelConfig):
    """The weights of `checkpoint` after checking that its model is this run's."""
    weights, stored, state, _ = read_weights_dir(checkpoint, fmt=FORMAT, what="kyam segmentation checkpoint")
    if SegModelConfig.from_dict(stored, source=str(weights)) != model_config:
        differ = sorted(k for k, v in stored.items() if model_config.to_dict().get(k) != v)
        raise CheckpointError(f"{checkpoint}: its model differs from this run's config in {differ}")
    return state


def train_segmentation(cfg: SegConfig, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train one segmentation run (see the module docstring); returns its metrics.json.

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
    model_config = seg_model_config_for(cfg, num_classes=len(class_names), in_channels=info.num_channels)
    model = build_seg_model(model_config)
    if out_dir.is_dir():
        remove_stale_temporaries(out_dir)
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        model.load_state_dict(_resume_weights(checkpoint, model_config))
    elif cfg.pretrained:
        init_pretrained(model, cfg.pretrained)
    model.to(device)

    # Each item's crop and flip come from a seed keyed by (seed, epoch, index), as in kyam_lib.train,
    # so the pseudo-mask and ground-truth runs of one seed see the same augmented images.
    train_data = SeededAugmentation(train_set, seed=cfg.seed)
    loader_generator = torch.Generator().manual_seed(cfg.seed)
    placement = loader_settings(cfg, device)
    loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        generator=loader_generator, **placement)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, **placement)
    if len(loader) == 0:
        raise ConfigError(f"SegConfig.batch_size {cfg.batch_size} exceeds the {len(train_set)} training images")
    optimizer = _make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(loader))  # reads epochs, warmup_epochs, min_lr_ratio
    loss_fn = _segmentation_loss(model)

    log_path = out_dir / "log.jsonl"
    record: dict[str, Any] = {}
    cm = ConfusionMatrix(len(class_names), IGNORE_INDEX)
    start_epoch, seconds_before = 0, 0.0
    if checkpoint is not None:
        state = load_training_state(checkpoint)
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"], loader_generator, device)
            start_epoch, record = int(state["epoch"]), dict(state["record"])
            cm = ConfusionMatrix.from_matrix(state["confusion"], IGNORE_INDEX)
            seconds_before = float(state["train_seconds"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{checkpoint}: training state does not fit this run ({err})") from err
        if log_path.exists():  # drop log lines of epochs after the checkpoint
            kept = [line for line in log_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] <= start_epoch]
            with atomic_write(log_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
    first_write = True
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        train_data.set_epoch(epoch)
        epoch_started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        check = _SegmentationCheck(out_dir=out_dir, epoch=epoch, device=device)
        for batch in tqdm(loader, desc=f"segmentation epoch {epoch + 1}/{cfg.epochs}", leave=False,
                          disable=not show_progress, mininterval=2.0):
            loss_sum += train_step(model, optimizer, scheduler, batch, loss_fn, amp_dtype=amp_dtype,
                                   grad_clip=cfg.grad_clip, check=check)
        if not math.isfinite(float(loss_sum)):
            raise RuntimeError(f"{out_dir}: non-finite segmentation loss in epoch {epoch + 1}")
        val_loss, cm = evaluate_segmentation(model, val_loader, amp_dtype=amp_dtype)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / len(loader),
            "lr": scheduler.get_last_lr()[0],
            "val_loss": val_loss,
            "val_miou": cm.miou(),
            "val_pixel_acc": cm.pixel_accuracy(),
        }
        if first_write:  # nothing is written before the first epoch ends; then a fresh run's earlier outputs go
            if checkpoint is None:
                remove_run_outputs(out_dir, RUN_OUTPUTS)
            cfg.to_json(out_dir / "config.json")
            first_write = False
        append_jsonl(log_path, {**record, "epoch_seconds": time.perf_counter() - epoch_started})
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            elapsed = seconds_before + time.perf_counter() - started
            save_segmentation_model(out_dir / "checkpoints" / f"epoch_{epoch + 1:04d}", model,
                                    train_config=cfg.to_dict(),
                                    training_state={"optimizer": optimizer.state_dict(),
                                                    "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                                                    "record": record, "confusion": cm.matrix.cpu(),
                                                    "train_seconds": elapsed,
                                                    "rng": _rng_state(loader_generator, device)})
            for old in epoch_checkpoints(out_dir)[:-cfg.keep_checkpoints] if cfg.keep_checkpoints > 0 else []:
                shutil.rmtree(old, ignore_errors=True)

    save_segmentation_model(out_dir / "model", model, train_config=cfg.to_dict())
    summary = cm.to_dict(class_names)
    metrics: dict[str, Any] = {
        "supervision": cfg.supervision,
        "masks": cfg.masks,
        "dataset": cfg.dataset,
        "train_split": cfg.train_split,
        "val_split": cfg.val_split,
        "image_size": list(cfg.image_size),
        "architecture": cfg.architecture,
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
        "train_seconds": seconds_before + time.perf_counter() - started,
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


