"""The training loop, and `python -m kyam_lib.train` (the entry point `torchrun` uses).

    python -m kyam_lib.train --preset smoke --out runs/smoke
    python -m kyam_lib.train --config my.json --l0_weight 0.001 --out runs/l0_0.001
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from . import distributed as dist
from .checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from .config import ConfigError, ModelConfig, TrainConfig, parse_overrides
from .data import build_dataset, default_data_root, ensure_dataset
from .io import append_jsonl, atomic_write, read_json, write_json
from .metrics import classifier_accuracy
from .model import MODEL_SIZES, KyamViT
from .penalty import l0_penalty, sparsity_rate
from .presets import preset_overrides
from .pretrained import init_from_timm

__all__ = ["TrainingError", "model_config_for", "build_datasets", "make_optimizer", "make_scheduler", "train", "main"]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, ...); the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_config_for(cfg: TrainConfig, *, num_classes: int, in_channels: int, multi_label: bool) -> ModelConfig:
    embed_dim, depth, num_heads = MODEL_SIZES[cfg.model_size]
    return ModelConfig(num_classes=num_classes, in_channels=in_channels, image_size=cfg.image_size,
                       patch_size=cfg.patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                       drop_path_rate=cfg.drop_path_rate, classifier=cfg.classifier,
                       use_reg_token=cfg.use_reg_token, use_head_gates=cfg.use_head_gates,
                       mask_rate=cfg.mask_rate, multi_label=multi_label)


def _subset(dataset, limit: int, seed: int):
    if limit <= 0 or limit >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    return Subset(dataset, sorted(order.tolist()))


def build_datasets(cfg: TrainConfig):
    """(train, val) datasets; the embedded synthetic sets are generated on first use."""
    root = Path(cfg.data_root) if cfg.data_root else default_data_root()
    dataset_root = ensure_dataset(cfg.dataset, root)
    train_set = build_dataset(cfg.dataset, dataset_root, cfg.train_split, image_size=cfg.image_size,
                              augment=cfg.augment)
    val_set = build_dataset(cfg.dataset, dataset_root, cfg.val_split, image_size=cfg.image_size, augment=False)
    return _subset(train_set, cfg.max_train_images, cfg.seed), _subset(val_set, cfg.max_val_images, cfg.seed)


def dataset_info(dataset) -> Any:
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def make_optimizer(model: KyamViT, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95); gates get their own lr and no decay; tokens, norms and biases no decay."""
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
        {"params": groups["gates"], "weight_decay": 0.0, "lr": cfg.gate_lr, "name": "gates"},
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

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _rng_state(gate_generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "gate_generator": gate_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gate_generator: torch.Generator) -> None:
    python = state["python"]
    random.setstate((python[-2], tuple(python[:-2]), python[-1]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    gate_generator.set_state(state["gate_generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def evaluate_classifier(model: KyamViT, loader: DataLoader, device: torch.device, amp_dtype) -> dict[str, float]:
    """Validation loss and classifier accuracy (fraction of correct per-class decisions)."""
    model.eval()
    losses, logits_all, labels_all = [], [], []
    for batch in loader:
        images, labels = batch["image"].to(device), batch["labels"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(images)
        losses.append(model.loss(output, labels) * len(images))
        logits_all.append(output.logits.float())
        labels_all.append(labels)
    logits, labels = dist.all_gather_cat(torch.cat(logits_all)), dist.all_gather_cat(torch.cat(labels_all))
    total_loss = dist.all_reduce_sum(torch.stack(losses).sum())
    return {
        "val_loss": float(total_loss) / len(labels),
        "val_classifier_acc": classifier_accuracy(logits, labels, multi_label=model.config.multi_label,
                                                  from_logits=True),
    }


def train(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train one configuration; writes config, log, checkpoints and metrics.json under cfg.out_dir."""
    out_dir = Path(cfg.out_dir)
    device = resolve_device(cfg.device)
    dist.setup(device)
    seed_everything(cfg.seed, cfg.deterministic)
    amp_dtype = torch.bfloat16 if (cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")) else None

    train_set, val_set = build_datasets(cfg)
    info = dataset_info(train_set)
    model_config = model_config_for(cfg, num_classes=len(info.class_names), in_channels=info.num_channels,
                                    multi_label=info.multi_label)
    model = KyamViT(model_config)
    if cfg.pretrained:
        init_from_timm(model, cfg.pretrained)
    model.to(device)
    ddp_model = dist.wrap(model, device)

    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size % world:
        raise ConfigError(f"TrainConfig.batch_size {cfg.batch_size} is not divisible by the {world} processes")
    per_rank_batch = cfg.batch_size // world
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.num_workers,
                        drop_last=True, pin_memory=device.type == "cuda")
    val_sampler = DistributedSampler(val_set, num_replicas=world, rank=rank, shuffle=False)
    val_loader = DataLoader(val_set, batch_size=per_rank_batch, sampler=val_sampler, num_workers=cfg.num_workers)
    if len(loader) == 0:
        raise ConfigError(f"TrainConfig.batch_size {cfg.batch_size} exceeds the {len(train_set)} training images")

    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(loader))
    # Gate noise comes from its own stream, identical on every rank; masking draws are per sample.
    gate_generator = torch.Generator().manual_seed(cfg.seed + 1)
    gate_shape = (model_config.depth, model_config.num_heads)
    start_epoch = 0
    log_path = out_dir / "log.jsonl"
    if resume and (last := latest_checkpoint(out_dir)) is not None:
        state = load_training_state(last)
        model.load_state_dict({k: v.to(device) for k, v in state["model"].items()})
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], gate_generator)
        start_epoch = state["epoch"]
        if dist.is_main() and log_path.exists():  # drop log lines of epochs after the checkpoint
            kept = [line for line in log_path.read_text().splitlines()
                    if line and json.loads(line)["epoch"] <= start_epoch]
            with atomic_write(log_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
    elif dist.is_main():
        log_path.unlink(missing_ok=True)
    if dist.is_main():
        cfg.to_json(out_dir / "config.json")

    record: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        sums = torch.zeros(3, device=device)  # loss, classification loss, l0 (sums over steps)
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                        disable=not (show_progress and dist.is_main()), mininterval=2.0)
        for batch in progress:
            images, labels = batch["image"].to(device, non_blocking=True), batch["labels"].to(device, non_blocking=True)
            mask_uniforms = dist.per_sample_uniforms(batch["index"], labels.shape[1], cfg.seed, epoch).to(device)
            gate_noise = torch.rand(gate_shape, generator=gate_generator).to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                output = ddp_model(images, labels=labels, mask_uniforms=mask_uniforms, gate_noise=gate_noise)
            cls_loss = model.loss(output, labels)
            l0 = l0_penalty(model)
            loss = cls_loss + cfg.l0_weight * l0
            if not torch.isfinite(loss):
                raise TrainingError(f"{out_dir}: non-finite loss {float(loss)} at epoch {epoch + 1}; "
                                    f"the last good checkpoint is kept in {out_dir / 'checkpoints'}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            sums += torch.stack([loss.detach(), cls_loss.detach(), l0.detach()]).float()
        sums = dist.all_reduce_sum(sums) / (len(loader) * world)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0]),
            "train_cls_loss": float(sums[1]),
            "l0": float(sums[2]),
            "lr": scheduler.get_last_lr()[0],
            **evaluate_classifier(model, val_loader, device, amp_dtype),
            "sparsity": sparsity_rate(model),
            "epoch_seconds": time.perf_counter() - started,
        }
        if dist.is_main():
            append_jsonl(log_path, record)
            save_checkpoint(out_dir / "checkpoints" / f"epoch_{epoch + 1:04d}", model, train_config=cfg.to_dict(),
                            training_state={"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                            "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                                            "rng": _rng_state(gate_generator)})
            _prune_checkpoints(out_dir, cfg.keep_checkpoints)
        dist.barrier()

    metrics = read_json(out_dir / "metrics.json") if not record and (out_dir / "metrics.json").exists() else {
        **{k: v for k, v in record.items() if k != "epoch_seconds"}, "epochs": cfg.epochs,
        "num_heads_total": model_config.depth * model_config.num_heads, "world_size": world,
    }
    if dist.is_main():
        save_checkpoint(out_dir / "model", model, train_config=cfg.to_dict())
        write_json(out_dir / "metrics.json", metrics)
    dist.barrier()
    return metrics


def _prune_checkpoints(out_dir: Path, keep: int) -> None:
    epochs = sorted((out_dir / "checkpoints").glob("epoch_*"))
    for old in epochs[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def config_from_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file of TrainConfig fields")
    parser.add_argument("--preset", help="named preset (smoke, quick, full, paper)")
    parser.add_argument("--out", help="output directory (TrainConfig.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    args, rest = parser.parse_known_args(argv)
    values: dict[str, Any] = {}
    if args.preset:
        values.update(preset_overrides(args.preset))
    if args.config:
        loaded = read_json(args.config)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a JSON object of TrainConfig fields")
        TrainConfig.from_dict({**TrainConfig().to_dict(), **loaded}, source=args.config)  # names the file on error
        values.update(loaded)
    values.update(parse_overrides(rest))
    if args.out:
        values["out_dir"] = args.out
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **values}), args.resume


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, resume = config_from_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = train(cfg, resume=resume)
    if dist.is_main():
        print(f"done: {cfg.out_dir}/metrics.json  classifier acc {metrics['val_classifier_acc']:.3f}  "
              f"sparsity {metrics['sparsity']:.2f}")
    dist.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
