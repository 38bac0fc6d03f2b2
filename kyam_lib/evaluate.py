"""Pseudo-masks and their evaluation over whole splits, for a trained run.

Datasets with background: the background score t is swept (one confusion matrix per t, all from a
single pass), the best t is chosen on the training split and applied to val; the mean-threshold
rule with "unassigned = background" is reported beside it. Datasets without background: the
mean-threshold rule with nearest-label fill. Classes come from the classifier (prob >= 0.5) unless
`oracle=True`, which uses the ground-truth image labels and is recorded in every output.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .aggregation import class_maps as aggregate_class_maps
from .checkpoint import CheckpointError, check_compatible, load_checkpoint
from .config import ConfigBase, ConfigError, parse_overrides
from .data import DatasetError, build_dataset, default_data_root, ensure_dataset
from .data.palette import palette
from .io import atomic_write, write_json
from .metrics import ConfusionMatrix, classifier_accuracy, mean_average_precision
from .penalty import sparsity_rate
from .model import KyamOutput, KyamViT
from .pseudo_masks import (masks_mean_threshold_background, masks_with_background, masks_without_background,
                           save_pseudo_mask, select_classes, threshold_curve)

__all__ = ["EvalConfig", "parse_blocks", "parse_head_weighting", "class_maps_for", "evaluate_split", "evaluate_run"]

DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig(ConfigBase):
    """How pseudo-masks are made and scored for one run."""

    run_dir: str = "runs/default"
    out_dir: str = ""                    # "" = <run_dir>/eval
    dataset: str = ""                    # "" = the run's dataset
    data_root: str = ""                  # "" = the run's data_root / $KYAM_DATA_ROOT
    splits: tuple[str, ...] = ("train", "val")
    select_split: str = "train"          # background datasets: best t is chosen on this split
    blocks: str = "all"                  # "all" | "last:k" | "0,3,5"
    head_weighting: str = "gates"        # "gates" | "mean" | a head index
    oracle: bool = False                 # True: draw the ground-truth classes instead of predictions
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    batch_size: int = 64
    max_images: int = 0                  # 0 = the run's own images of each split; k > 0: at most k of them
    save_masks: bool = True
    device: str = "auto"

    def validate(self) -> None:
        parse_blocks(self.blocks)
        parse_head_weighting(self.head_weighting)
        if self.select_split not in self.splits:
            raise ConfigError(f"EvalConfig.select_split {self.select_split!r} is not in splits {list(self.splits)}")


def parse_blocks(spec: str) -> str | int | list[int]:
    """"all" → "all", "last:3" → 3 (last three blocks), "0,2,5" → [0, 2, 5]."""
    spec = spec.strip()
    try:
        if spec == "all":
            return "all"
        if spec.startswith("last:"):
            return int(spec[5:])
        return [int(part) for part in spec.split(",")]
    except ValueError:
        raise ConfigError(f"EvalConfig.blocks {spec!r}: expected 'all', 'last:k' or a comma list of block indices") from None


def parse_head_weighting(spec: str) -> str | int:
    if spec in ("gates", "mean"):
        return spec
    try:
        return int(spec)
    except ValueError:
        raise ConfigError(f"EvalConfig.head_weighting {spec!r}: expected 'gates', 'mean' or a head index") from None


def class_maps_for(model: KyamViT, output: KyamOutput, image_size: tuple[int, int], *, blocks: Any = "all",
                   head_weighting: Any = "gates") -> Tensor:
    """(B, C, H, W) maps: class-token attention, or class activation maps for the "cam" classifier."""
    if output.patch_logits is not None:
        B, C, _ = output.patch_logits.shape
        cams = output.patch_logits.float().relu().reshape(B, C, *output.grid_size)
        return F.interpolate(cams, size=image_size, mode="bilinear", align_corners=False)
    gates_applied = output.class_attention.shape[2] == 1 < output.head_gates.shape[1]  # attention_heads="gated_mean"
    return aggregate_class_maps(output.class_attention, None if gates_applied else output.head_gates,
                                grid_size=output.grid_size, image_size=image_size, blocks=blocks,
                                head_weighting="mean" if gates_applied else head_weighting)


def _probabilities(model: KyamViT, logits: Tensor) -> Tensor:
    return logits.float().sigmoid() if model.config.multi_label else logits.float().softmax(dim=1)


@torch.no_grad()
def _batches(model: KyamViT, loader: DataLoader, device: torch.device, cfg: EvalConfig, desc: str):
    """Yield (batch, probs, class maps at mask resolution) for each batch."""
    blocks, head_weighting = parse_blocks(cfg.blocks), parse_head_weighting(cfg.head_weighting)
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0):
        images = batch["image"].to(device)
        # The default gate weighting needs only each block's gated head mean: 5x less memory.
        output = model(images, return_attention=model.config.classifier != "cam",
                       attention_heads="gated_mean" if head_weighting == "gates" else "all")
        maps = class_maps_for(model, output, tuple(batch["mask"].shape[-2:]), blocks=blocks,
                              head_weighting=head_weighting)
        yield batch, _probabilities(model, output.logits), output.logits, maps


def evaluate_split(model: KyamViT, dataset, cfg: EvalConfig, *, split: str, background_score: float | None = None,
                   mask_dir: Path | None = None) -> dict[str, Any]:
    """One pass over a split: classifier metrics and pseudo-mask confusion matrices.

    With background: a (T, K, K) curve over cfg.thresholds, the mean-threshold rule, and — when
    `background_score` is given — masks at that t are written to `mask_dir`.
    """
    device = next(model.parameters()).device
    info = dataset.dataset if isinstance(dataset, Subset) else dataset
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False)
    num_mask_classes = len(info.class_names) + int(info.has_background)
    curve = torch.zeros(len(cfg.thresholds), num_mask_classes, num_mask_classes, dtype=torch.int64)
    main_cm, mean_bg_cm = ConfusionMatrix(num_mask_classes), ConfusionMatrix(num_mask_classes)
    logits_all, labels_all = [], []
    for batch, probs, logits, maps in _batches(model, loader, device, cfg, f"{split} pseudo-masks"):
        labels, targets = batch["labels"].to(device), batch["mask"].to(device)
        selected = select_classes(probs, labels, oracle=cfg.oracle)
        logits_all.append(logits.float().cpu())
        labels_all.append(labels.cpu())
        if info.has_background:
            curve += threshold_curve(maps, selected, targets, cfg.thresholds, num_mask_classes).cpu()
            mean_bg_cm.update(masks_mean_threshold_background(maps, probs, selected), targets)
            masks = None
            if background_score is not None:
                masks = masks_with_background(maps, selected, background_score=background_score)
                main_cm.update(masks, targets)
        else:
            masks = masks_without_background(maps, probs, selected)
            main_cm.update(masks, targets)
        if mask_dir is not None and masks is not None:
            for image_id, mask in zip(batch["id"], masks.cpu().numpy()):
                save_pseudo_mask(mask.astype(np.uint8), mask_dir / f"{image_id}.png", palette(256))
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    result: dict[str, Any] = {
        "split": split,
        "images": len(labels),
        "classifier_acc": classifier_accuracy(logits, labels, multi_label=model.config.multi_label, from_logits=True),
        "classifier_map": mean_average_precision(_probabilities(model, logits), labels),
    }
    if info.has_background:
        result["curve"] = curve
        result["mean_threshold_cm"] = mean_bg_cm
    if background_score is not None or not info.has_background:
        result["cm"] = main_cm
    return result


def _curve_table(curve: Tensor, thresholds: tuple[float, ...], split: str) -> pd.DataFrame:
    rows = []
    for t, matrix in zip(thresholds, curve):
        cm = ConfusionMatrix.from_matrix(matrix)
        rows.append({"split": split, "background_score": t, "miou": cm.miou(), "pixel_acc": cm.pixel_accuracy()})
    return pd.DataFrame(rows)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False)


def _run_subset(dataset, split: str, train_cfg: dict[str, Any], max_images: int):
    """The images of `split` the run itself used (its seeded max_train/val_images subset), capped at `max_images`.

    Same rule as training (a prefix of one seeded permutation), so a cap keeps a subset of the
    trained images, and pseudo-masks exist for exactly the images a same-seed segmentation run
    with that many training images draws.
    """
    limit = {train_cfg.get("train_split", "train"): train_cfg.get("max_train_images", 0),
             train_cfg.get("val_split", "val"): train_cfg.get("max_val_images", 0)}.get(split, 0)
    if max_images > 0:
        limit = min(limit, max_images) if limit > 0 else max_images
    if limit <= 0 or limit >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(train_cfg.get("seed", 0)))[:limit]
    return Subset(dataset, sorted(order.tolist()))


def evaluate_run(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate a trained run: writes metrics.json, CSV tables and palette PNG pseudo-masks to out_dir."""
    started = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "eval"
    loaded = load_checkpoint(run_dir / "model")
    train_cfg = loaded.train_config or {}
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    model = loaded.model.to(device).eval()
    name = cfg.dataset or train_cfg.get("dataset", "")
    root = ensure_dataset(name, Path(cfg.data_root or train_cfg.get("data_root") or default_data_root()))
    image_size = tuple(loaded.model_config.image_size)

    datasets = {}
    for split in cfg.splits:
        dataset = build_dataset(name, root, split, image_size=image_size, augment=False)
        check_compatible(loaded.model_config, num_classes=len(dataset.class_names), num_channels=dataset.num_channels,
                         source=str(run_dir / "model"))
        dataset = _run_subset(dataset, split, train_cfg, cfg.max_images)
        datasets[split] = dataset
    info = next(iter(datasets.values()))
    info = info.dataset if isinstance(info, Subset) else info
    mask_names = (["background"] if info.has_background else []) + list(info.class_names)

    summary: dict[str, Any] = {
        "run_dir": str(run_dir), "dataset": name, "oracle": cfg.oracle, "blocks": cfg.blocks,
        "head_weighting": cfg.head_weighting, "has_background": info.has_background,
        "sparsity": sparsity_rate(model),
        "rule": "background_score" if info.has_background else "no_background", "splits": {},
    }
    curves, per_class = [], []
    best_t = None
    if info.has_background:
        first = evaluate_split(model, datasets[cfg.select_split], cfg, split=cfg.select_split)
        table = _curve_table(first["curve"], cfg.thresholds, cfg.select_split)
        best_t = float(table.loc[table["miou"].idxmax(), "background_score"])
        summary["background_score"] = best_t
        summary["background_score_chosen_on"] = cfg.select_split
    for split, dataset in datasets.items():
        mask_dir = out_dir / "pseudo_masks" / split if cfg.save_masks else None
        result = evaluate_split(model, dataset, cfg, split=split, background_score=best_t, mask_dir=mask_dir)
        cm: ConfusionMatrix = result["cm"]
        entry = {"images": result["images"], "miou": cm.miou(), "pixel_acc": cm.pixel_accuracy(),
                 "classifier_acc": result["classifier_acc"], "classifier_map": result["classifier_map"]}
        if info.has_background:
            curves.append(_curve_table(result["curve"], cfg.thresholds, split))
            entry["mean_threshold_miou"] = result["mean_threshold_cm"].miou()
            entry["mean_threshold_pixel_acc"] = result["mean_threshold_cm"].pixel_accuracy()
        summary["splits"][split] = entry
        ious = cm.per_class_iou().tolist()
        per_class.append(pd.DataFrame({"split": split, "class": mask_names, "iou": ious}))
    summary["eval_seconds"] = time.perf_counter() - started

    cfg.replace(out_dir=str(out_dir)).to_json(out_dir / "config.json")
    if curves:
        _write_csv(pd.concat(curves), out_dir / "threshold_curve.csv")
    _write_csv(pd.concat(per_class), out_dir / "per_class_iou.csv")
    write_json(out_dir / "metrics.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kyam_lib.evaluate --run_dir runs/x [--blocks last:3] [--oracle true] ...`"""
    try:
        values = parse_overrides(list(sys.argv[1:] if argv is None else argv))
        cfg = EvalConfig.from_dict({**EvalConfig().to_dict(), **values})
        summary = evaluate_run(cfg)
    except (ConfigError, CheckpointError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, entry in summary["splits"].items():
        print(f"{split}: pseudo-mask mIoU {entry['miou']:.3f}  pixel acc {entry['pixel_acc']:.3f}  "
              f"classifier acc {entry['classifier_acc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
