"""The training loop, and `python -m kyam_lib.train` (the entry point `torchrun` uses).

    python -m kyam_lib.train --preset smoke --out runs/smoke
    python -m kyam_lib.train --config my.json --l0_weight 0.001 --out runs/l0_0.001
    python -m kyam_lib.train --preset smoke --out runs/smoke --resume     # continue the latest checkpoint
    torchrun --nproc_per_node 2 -m kyam_lib.train --preset smoke --out runs/smoke_ddp

Under torchrun every process trains on its share of each batch (batch_size is the global batch,
split evenly); gradients, losses and validation metrics are reduced over all processes, and only
rank 0 writes. Outputs in --out: config.json, log.jsonl (one line per epoch),
checkpoints/epoch_NNNN (model, optimizer, scheduler, epoch, RNG states; written every
checkpoint_every epochs and after the last, the newest keep_checkpoints kept),
snapshots/epoch_NNNN (weights only, every snapshot_every epochs, never pruned), model/ (final
weights) and metrics.json (written last).
Nothing is written before the first epoch has finished, so a run that fails early leaves --out
as it was; a fresh (not --resume) run replaces an earlier run's outputs when it writes first.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from . import distributed as dist
from .checkpoint import (CheckpointError, epoch_checkpoints, check_compatible, latest_checkpoint, load_checkpoint,
                         load_training_state, remove_stale_temporaries, save_checkpoint)
from .config import ConfigError, ModelConfig, TrainConfig, parse_overrides
from .data import DatasetError
from .io import append_jsonl, atomic_write, read_json, remove_run_outputs, write_json
from .method.metrics import classifier_accuracy
from .method.model import KyamViT, model_size
from .method.gates import l0_penalty, sparsity_rate
from .presets import preset_overrides
from .pretrained import init_from_timm
from .protocol import PLACEMENT_FIELDS, resolve_train_split
from .run_data import CachedItems, SeededAugmentation, build_datasets, dataset_info
from .runtime import attention_kernels, cpu_threads, loader_settings, resolve_device, seed_everything, to_device

__all__ = ["TrainingError", "SeededAugmentation", "CachedItems", "model_config_for", "build_datasets", "make_optimizer",
           "make_scheduler", "gates_warming_up", "gate_ramp", "chance_accuracy", "LossFn", "FiniteCheck",
           "TrainingCheck", "train_step", "classifier_loss", "train", "main"]

# Outputs of a run that a fresh (not resumed) run replaces; other files in --out are left alone.
RUN_OUTPUTS = ("config.json", "log.jsonl", "metrics.json", "checkpoints", "snapshots", "model")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, ...); the last good checkpoint is kept."""


def model_config_for(cfg: TrainConfig, *, num_classes: int, in_channels: int, multi_label: bool) -> ModelConfig:
    size = model_size(cfg.model_size)
    return ModelConfig(num_classes=num_classes, in_channels=in_channels, image_size=cfg.image_size,
                       patch_size=cfg.patch_size, embed_dim=size.embed_dim, depth=size.depth,
                       num_heads=cfg.num_heads or size.num_heads,
                       drop_path_rate=cfg.drop_path_rate, classifier=cfg.classifier,
                       use_reg_token=cfg.use_reg_token, use_head_gates=cfg.use_head_gates,
                       mask_rate=cfg.mask_rate, multi_label=multi_label)


def gates_warming_up(cfg: TrainConfig, epochs_done: float) -> bool:
    """True during the first `l0_warmup_epochs`: every head gate held open, untrained, and lambda 0."""
    return epochs_done < cfg.l0_warmup_epochs


def gate_ramp(cfg: TrainConfig, epochs_done: float) -> float:
    """0 during the warm-up, then rising linearly to 1 over `gate_ramp_epochs` (1 at once if 0).

    Scales the gates' lr and lambda. Short runs need both the warm-up and the ramp: while the
    classifier is still at chance attention only adds noise, and gates switched on at full
    strength shut heads faster than the weights adapt; a shut head gets no gradient to reopen.
    """
    if gates_warming_up(cfg, epochs_done):
        return 0.0
    if cfg.gate_ramp_epochs <= 0:
        return 1.0
    return min(1.0, (epochs_done - cfg.l0_warmup_epochs) / cfg.gate_ramp_epochs)


def l0_weight_at(cfg: TrainConfig, epochs_done: float) -> float:
    """lambda x `gate_ramp` (the paper's constant lambda from the first step when both are 0)."""
    return cfg.l0_weight * gate_ramp(cfg, epochs_done)


def make_optimizer(model: KyamViT, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95); gates get lr x gate_lr_ratio and no decay; tokens, norms and biases no decay."""
    no_decay_names = model.no_weight_decay()
    groups: dict[str, list] = {"decay": [], "no_decay": [], "gates": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith("log_alpha"):
            groups["gates"].append(param)
        elif param.ndim < 2 or name in no_decay_names:
            groups["no_decay"].append(param)
        else:
            groups["decay"].append(param)
    param_groups = [
        {"params": groups["decay"], "weight_decay": cfg.weight_decay, "lr": cfg.lr, "name": "decay"},
        {"params": groups["no_decay"], "weight_decay": 0.0, "lr": cfg.lr, "name": "no_decay"},
        {"params": groups["gates"], "weight_decay": 0.0, "lr": cfg.lr * cfg.gate_lr_ratio, "name": "gates"},
    ]
    return torch.optim.AdamW([g for g in param_groups if g["params"]], betas=(0.9, 0.95))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Linear warm-up then cosine decay to min_lr_ratio, stepped per iteration."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def gate_factor(step: int) -> float:  # frozen during the warm-up, then ramped in (see gate_ramp)
        return factor(step) * gate_ramp(cfg, step / steps_per_epoch)

    factors = [gate_factor if group.get("name") == "gates" else factor for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def _rng_state(gate_generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random stream of this process (identical on all ranks: same seeds, same draws)."""
    version, keys, gauss_next = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "gate_generator": gate_generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], gate_generator: torch.Generator, device: torch.device) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["keys"].tolist()), python["gauss_next"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    gate_generator.set_state(state["gate_generator"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@torch.no_grad()
def evaluate_classifier(model: KyamViT, loader: DataLoader, device: torch.device, amp_dtype,
                        kernels=contextlib.nullcontext, *, gates_open: bool = False) -> dict[str, float]:
    """Validation loss and classifier accuracy over the whole split, every image counted once.

    Each rank scores its `shard_indices` share; losses are summed and logits gathered over ranks.
    `gates_open` scores the network with every head gate held open (what the L0 warm-up trains)
    instead of the evaluation gates.
    """
    model.eval()
    depth, heads = len(model.blocks), model.config.num_heads
    gate_noise = torch.ones(depth, heads, device=device) if gates_open else None
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    logits_all = [torch.zeros(0, model.config.num_classes, device=device)]
    labels_all = [torch.zeros(0, model.config.num_classes, device=device)]
    for batch in loader:
        images, labels = batch["image"].to(device), batch["labels"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None), kernels():
            output = model(images, gate_noise=gate_noise)
        loss_sum += model.loss(output, labels).double() * len(images)  # the loss is a mean over the batch
        logits_all.append(output.logits.float())
        labels_all.append(labels.float())
    logits, labels = dist.all_gather_cat(torch.cat(logits_all)), dist.all_gather_cat(torch.cat(labels_all))
    total_loss = dist.all_reduce_sum(loss_sum)
    return {
        "val_loss": float(total_loss) / len(labels),
        "val_classifier_acc": classifier_accuracy(logits, labels, multi_label=model.config.multi_label,
                                                  from_logits=True),
        "val_chance_acc": chance_accuracy(labels, multi_label=model.config.multi_label),
    }


def chance_accuracy(labels: torch.Tensor, *, multi_label: bool) -> float:
    """Accuracy of a classifier that ignores the image: answering "absent" for every class
    (multi-label; (N, C) multi-hot labels), or always the most frequent class (single-label).
    A classifier at this rate has not learned, and its attention maps are no evidence."""
    labels = labels.float()
    if multi_label:
        return float(1.0 - labels.mean()) if labels.numel() else 0.0
    return float(labels.sum(0).max() / max(len(labels), 1))


def _check_finite(loss: torch.Tensor, *, what: str, out_dir: Path, epoch: int, step: int, cfg: TrainConfig,
                  first_step: int | None = None) -> None:
    """Raise TrainingError on every rank when the value is not finite on any rank.

    With `first_step`, `loss` is a count of non-finite values over steps first_step..step.
    """
    if first_step is None:
        bad = dist.all_reduce_sum((~torch.isfinite(loss.detach())).float().reshape(1))
    else:
        bad = dist.all_reduce_sum(loss.detach().float().reshape(1))
    if float(bad) > 0:
        last = latest_checkpoint(out_dir)
        kept = f"the last good checkpoint is kept: {last}" if last else "no checkpoint had been written yet"
        where = (f"step {step + 1}" if first_step is None else f"one of steps {first_step + 1}..{step + 1} "
                 f"(checked every TrainConfig.finite_check_every={cfg.finite_check_every} steps)")
        value = f" ({float(loss.detach())})" if first_step is None else ""
        raise TrainingError(f"{out_dir}: non-finite {what}{value} at epoch {epoch + 1}, {where}; "
                            f"{kept}. Lower TrainConfig.lr ({cfg.lr}) or gate_lr_ratio ({cfg.gate_lr_ratio}), or set grad_clip.")


# ---- one training step: the classifier loop, the segmentation loop and the benchmark step through train_step ----
# loss_fn(batch, forward_context) -> (loss, parts): the forward pass inside forward_context(), the loss outside it.
LossFn = Callable[[dict[str, Any], Callable[[], ContextManager]], tuple[torch.Tensor, torch.Tensor]]


class FiniteCheck:
    """The non-finite check of `train_step`: this one checks nothing; subclasses raise."""

    def loss(self, loss: torch.Tensor) -> None:
        """The step's loss, before the backward pass."""

    def grad_norm(self, norm: torch.Tensor) -> None:
        """The gradient norm before clipping (when clipping is on)."""

    def step_done(self) -> None:
        """Once per step, before the optimizer step."""


class TrainingCheck(FiniteCheck):
    """The training loop's check, one per epoch: TrainingError on every rank at a non-finite loss or gradient
    norm, at once (finite_check_every = 1) or from a count kept on the device and read every
    finite_check_every steps and at the epoch's last step (each read waits for the GPU)."""

    def __init__(self, cfg: TrainConfig, *, out_dir: Path, epoch: int, steps: int, device: torch.device) -> None:
        self.cfg, self.out_dir, self.epoch, self.steps = cfg, out_dir, epoch, steps
        self.step, self.checked_from = 0, 0
        self.every_step = cfg.finite_check_every == 1
        self.nonfinite = torch.zeros((), device=device)

    def loss(self, loss: torch.Tensor) -> None:
        self._count(loss, "loss")

    def grad_norm(self, norm: torch.Tensor) -> None:
        self._count(norm, "gradient norm")

    def _count(self, value: torch.Tensor, what: str) -> None:
        if self.every_step:
            _check_finite(value, what=what, out_dir=self.out_dir, epoch=self.epoch, step=self.step, cfg=self.cfg)
        else:
            self.nonfinite += (~torch.isfinite(value.detach())).float()

    def step_done(self) -> None:
        if not self.every_step and ((self.step + 1) % self.cfg.finite_check_every == 0 or self.step + 1 == self.steps):
            _check_finite(self.nonfinite, what="loss or gradient norm", out_dir=self.out_dir, epoch=self.epoch,
                          step=self.step, cfg=self.cfg, first_step=self.checked_from)
            self.checked_from = self.step + 1
        self.step += 1


@contextlib.contextmanager
def _forward_context(device_type: str, amp_dtype: torch.dtype | None, kernels: Callable[[], ContextManager]):
    with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None), kernels():
        yield


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, batch: dict[str, Any], loss_fn: LossFn, *,
               amp_dtype: torch.dtype | None = None, kernels: Callable[[], ContextManager] = contextlib.nullcontext,
               grad_clip: float = 0.0, check: FiniteCheck | None = None) -> torch.Tensor:
    """One optimisation step of `model` on `batch`; returns the detached loss parts `loss_fn` reports.

    `loss_fn` (see LossFn) runs the forward pass under autocast to `amp_dtype` and the attention
    `kernels`; then the non-finite `check` of the loss, backward, clipping to `grad_clip` (0 = off)
    and the check of its norm, optimizer step, scheduler step.
    """
    device_type = next(model.parameters()).device.type
    check = check or FiniteCheck()
    loss, parts = loss_fn(batch, functools.partial(_forward_context, device_type, amp_dtype, kernels))
    check.loss(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        # After DDP's all-reduce every rank holds the same gradients, hence the same norm.
        check.grad_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    check.step_done()
    optimizer.step()
    scheduler.step()
    return parts


def classifier_loss(model: KyamViT, cfg: TrainConfig, *, epoch: int, epochs_done: float,
                    gate_generator: torch.Generator, forward: nn.Module | None = None) -> LossFn:
    """The loss of a classifier step at `epochs_done` (epoch + step / steps per epoch): per-sample masking
    uniforms, gate noise from `gate_generator` (u = 1, every gate open, during the L0 warm-up), and
    classification loss + lambda x L0 (`l0_weight_at`). The batch goes through `forward` (DDP's wrapper;
    default `model`). Parts: float64 (loss, classification loss, L0)."""
    device = next(model.parameters()).device
    forward = forward or model

    def loss_fn(batch: dict[str, Any], forward_context: Callable[[], ContextManager]):
        images, labels = batch["image"].to(device, non_blocking=True), batch["labels"].to(device, non_blocking=True)
        mask_uniforms = to_device(dist.per_sample_uniforms(batch["index"], labels.shape[1], cfg.seed, epoch), device)
        gate_noise = to_device(torch.rand((model.config.depth, model.config.num_heads), generator=gate_generator),
                               device)
        if gates_warming_up(cfg, epochs_done):
            gate_noise = torch.ones_like(gate_noise)  # u -> 1: every gate open
        with forward_context():
            output = forward(images, labels=labels, mask_uniforms=mask_uniforms, gate_noise=gate_noise)
        cls_loss = model.loss(output, labels)
        l0 = l0_penalty(model)
        loss = cls_loss + l0_weight_at(cfg, epochs_done) * l0
        return loss, torch.stack([loss.detach(), cls_loss.detach(), l0.detach()]).double()

    return loss_fn


def _resume_state(checkpoint: Path, model_config: ModelConfig, *, num_classes: int, num_channels: int):
    """(weights, training state) of `checkpoint` after checking that it fits the data and the model."""
    loaded = load_checkpoint(checkpoint)
    check_compatible(loaded.model_config, num_classes=num_classes, num_channels=num_channels, source=str(checkpoint))
    if loaded.model_config != model_config:
        differ = {k: (v, model_config.to_dict()[k]) for k, v in loaded.model_config.to_dict().items()
                  if model_config.to_dict()[k] != v}
        raise CheckpointError(f"{checkpoint}: its model differs from this run's config in "
                              + ", ".join(f"{k} (checkpoint {a!r}, run {b!r})" for k, (a, b) in differ.items()))
    return loaded.model.state_dict(), load_training_state(checkpoint)


def train(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train one configuration; writes config, log, checkpoints and metrics.json under cfg.out_dir.

    resume=True continues from the latest `checkpoints/epoch_NNNN` of cfg.out_dir (after checking
    that its model fits the data and the config), or starts fresh when there is none. On CPU with
    cfg.deterministic, a resumed run ends with the metrics and weights of an uninterrupted one.
    Raises TrainingError on a non-finite loss, keeping the last good checkpoint. cfg.cpu_threads > 0
    runs it on that many CPU threads (restored afterwards).
    """
    with cpu_threads(cfg.cpu_threads):
        return _train(cfg, resume=resume, show_progress=show_progress)


def _train(cfg: TrainConfig, *, resume: bool, show_progress: bool) -> dict[str, Any]:
    cfg, split_note = resolve_train_split(cfg)
    out_dir = Path(cfg.out_dir)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic, device)
    if device.type == "cuda" and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True
    dist.setup(device)
    if split_note and dist.is_main() and show_progress:
        _note(split_note)
    kernels = functools.partial(attention_kernels, device, cfg.deterministic)
    amp_dtype = torch.bfloat16 if (cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")) else None
    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size % world:
        raise ConfigError(f"TrainConfig.batch_size {cfg.batch_size} is not divisible by the {world} processes")

    train_set, val_set = build_datasets(cfg)
    info = dataset_info(train_set)
    model_config = model_config_for(cfg, num_classes=len(info.class_names), in_channels=info.num_channels,
                                    multi_label=info.multi_label)
    model = KyamViT(model_config)

    if dist.is_main() and out_dir.is_dir():
        remove_stale_temporaries(out_dir)
    dist.barrier()
    checkpoint = latest_checkpoint(out_dir) if resume else None
    state: dict[str, Any] = {}
    if checkpoint is not None:
        weights, state = _resume_state(checkpoint, model_config, num_classes=len(info.class_names),
                                       num_channels=info.num_channels)
        model.load_state_dict(weights)
    elif cfg.pretrained:
        init_from_timm(model, cfg.pretrained, file=cfg.pretrained_file)
    model.to(device)
    ddp_model = dist.wrap(model, device)

    per_rank_batch = cfg.batch_size // world
    if len(train_set) < cfg.batch_size:
        raise ConfigError(f"TrainConfig.batch_size {cfg.batch_size} exceeds the {len(train_set)} training images")
    train_data = SeededAugmentation(train_set, seed=cfg.seed)
    sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    placement = loader_settings(cfg, device, processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    loader = DataLoader(train_data, batch_size=per_rank_batch, sampler=sampler, drop_last=True, **placement)
    val_loader = DataLoader(val_set, batch_size=per_rank_batch, sampler=dist.shard_indices(len(val_set)),
                            **placement)

    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(loader))
    # Gate noise comes from its own stream, identical on every rank; masking draws are per sample.
    gate_generator = torch.Generator().manual_seed(cfg.seed + 1)
    start_epoch = 0
    record: dict[str, Any] = {}
    log_path = out_dir / "log.jsonl"
    if checkpoint is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"], gate_generator, device)
            start_epoch, record = int(state["epoch"]), dict(state["record"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{checkpoint}: training state does not fit this run ({err})") from err
        if dist.is_main():
            _note(f"resuming {out_dir} after epoch {start_epoch} ({checkpoint})")
            stored = read_json(checkpoint / "config.json").get("train") or {}
            changed = sorted(k for k, v in cfg.to_dict().items()
                             if k in stored and stored[k] != v and k not in PLACEMENT_FIELDS)
            if changed:
                _note(f"note: config differs from the checkpoint's in {changed}; the run is no longer "
                      "the one that was interrupted")
            if log_path.exists():  # drop log lines of epochs after the checkpoint
                kept = [line for line in log_path.read_text().splitlines()
                        if line.strip() and json.loads(line)["epoch"] <= start_epoch]
                with atomic_write(log_path) as tmp:
                    tmp.write_text("".join(line + "\n" for line in kept))
    elif resume and dist.is_main():
        _note(f"no checkpoint in {out_dir / 'checkpoints'}; starting fresh")
    fresh, first_write = checkpoint is None, True

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        sampler.set_epoch(epoch)
        train_data.set_epoch(epoch)
        started = time.perf_counter()
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, classification loss, l0 over steps
        check = TrainingCheck(cfg, out_dir=out_dir, epoch=epoch, steps=len(loader), device=device)
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                        disable=not (show_progress and dist.is_main()), mininterval=2.0)
        for step, batch in enumerate(progress):
            loss_fn = classifier_loss(model, cfg, epoch=epoch, epochs_done=epoch + step / len(loader),
                                      gate_generator=gate_generator, forward=ddp_model)
            sums += train_step(model, optimizer, scheduler, batch, loss_fn, amp_dtype=amp_dtype, kernels=kernels,
                               grad_clip=cfg.grad_clip, check=check)
        sums = dist.all_reduce_sum(sums) / (len(loader) * world)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0]),
            "train_cls_loss": float(sums[1]),
            "l0": float(sums[2]),
            "lr": scheduler.get_last_lr()[0],
            # During the L0 warm-up the network being trained has every gate open: score that one.
            "gates_held_open": gates_warming_up(cfg, epoch + 1),
        }
        record.update(evaluate_classifier(model, val_loader, device, amp_dtype, kernels,
                                          gates_open=record["gates_held_open"]))
        record["sparsity"] = 0.0 if record["gates_held_open"] else sparsity_rate(model)
        if dist.is_main():
            if first_write:
                if fresh:
                    remove_run_outputs(out_dir, RUN_OUTPUTS)
                cfg.to_json(out_dir / "config.json")
                first_write = False
            append_jsonl(log_path, {**record, "epoch_seconds": round(time.perf_counter() - started, 3)})
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                save_checkpoint(out_dir / "checkpoints" / f"epoch_{epoch + 1:04d}", model,
                                train_config=cfg.to_dict(),
                                training_state={"optimizer": optimizer.state_dict(),
                                                "scheduler": scheduler.state_dict(),
                                                "epoch": epoch + 1, "record": record,
                                                "rng": _rng_state(gate_generator, device)})
                _prune_checkpoints(out_dir, cfg.keep_checkpoints)
            if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0:
                save_checkpoint(out_dir / "snapshots" / f"epoch_{epoch + 1:04d}", model, train_config=cfg.to_dict())
            if show_progress:
                _note(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['train_loss']:.4f}"
                      f"  val_loss {record['val_loss']:.4f}"
                      f"  val_acc {record['val_classifier_acc']:.3f}  sparsity {record['sparsity']:.2f}"
                      f"  ({time.perf_counter() - started:.1f} s)")
        dist.barrier()

    metrics = {**record, "epochs": cfg.epochs, "num_heads_total": model_config.depth * model_config.num_heads,
               "world_size": world}
    if dist.is_main():
        save_checkpoint(out_dir / "model", model, train_config=cfg.to_dict())
        write_json(out_dir / "metrics.json", metrics)  # last: its presence means the run completed
    dist.barrier()
    return metrics


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _prune_checkpoints(out_dir: Path, keep: int) -> None:
    for old in epoch_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def config_from_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    """(config, resume) from the command line: defaults < --preset < --config file < --key value.

    A bad value raises ConfigError naming the field and where it came from (the file or the flag).
    """
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file of TrainConfig fields")
    parser.add_argument("--preset", help="named preset (smoke, quick, full, paper)")
    parser.add_argument("--out", help="output directory (TrainConfig.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    args, rest = parser.parse_known_args(argv)
    sources: list[tuple[str, dict[str, Any]]] = []  # (where, values), later ones win
    if args.config:
        try:
            loaded = read_json(args.config)
        except (FileNotFoundError, ValueError) as err:  # the message names the file
            raise ConfigError(str(err)) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a JSON object of TrainConfig fields")
        sources.append((str(args.config), loaded))
    sources.append(("command line", parse_overrides(rest)))
    if args.preset:
        # The preset goes first; its per-dataset settings follow the dataset the later sources name.
        dataset = next((given["dataset"] for _, given in reversed(sources) if "dataset" in given), None)
        try:
            sources.insert(0, (f"--preset {args.preset}", preset_overrides(args.preset, dataset)))
        except ValueError as err:
            raise ConfigError(f"--preset: {err}") from None
    if args.out:
        sources.append(("--out", {"out_dir": args.out}))
    values: dict[str, Any] = {}
    for where, given in sources:
        unknown = sorted(set(given) - set(TrainConfig.field_names()))
        if unknown and where == "command line":
            raise ConfigError(f"unknown option(s) {' '.join('--' + name for name in unknown)}; "
                              f"options are the TrainConfig fields: {TrainConfig.field_names()}")
        if unknown:
            raise ConfigError(f"{where}: unknown TrainConfig field(s) {unknown}; "
                              f"known fields: {TrainConfig.field_names()}")
        values.update(given)
    try:
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **values}), args.resume
    except ConfigError as err:
        field = re.match(r"TrainConfig\.(\w+)", str(err))
        origins = [where for where, given in sources if field and field.group(1) in given]
        if not origins:
            raise
        where = f"--{field.group(1)}" if origins[-1] == "command line" else origins[-1]
        raise ConfigError(f"{where}: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: exit status 0 on success, 2 for a bad command line or config, 1 for bad data/checkpoint/training."""
    try:
        cfg, resume = config_from_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status, metrics, main_process = 0, None, True
    try:
        metrics = train(cfg, resume=resume)
        main_process = dist.is_main()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        status = 2
    except (DatasetError, CheckpointError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        status = 1
    finally:
        dist.cleanup()
    if metrics is not None and main_process:
        print(f"done: {cfg.out_dir}/metrics.json  classifier acc {metrics['val_classifier_acc']:.3f}  "
              f"sparsity {metrics['sparsity']:.2f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
