"""Pseudo-masks and their evaluation over whole splits, for a trained run.

The network sees each image resized to its training size (optionally at several scales and
mirrored, `scales`/`flip`); the class maps are upsampled to the image's own size and the
pseudo-masks are scored against the original mask and written at that size. Datasets with
background: the background score t is swept (one confusion matrix per t, all from a single pass),
the best t is chosen on the training split and applied to val; the mean-threshold rule with
"unassigned = background" is reported beside it, and with `crf` the dense-CRF refinement of the
masks at t. Datasets without background: the mean-threshold rule with nearest-label fill.
Classes come from the image labels on the training splits and from the classifier (prob >= 0.5)
elsewhere (`class_source`), recorded in every output.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, check_compatible, load_checkpoint
from .config import ConfigBase, ConfigError, parse_overrides
from .crf import CRFParams
from .data import DatasetError
from .inference import (EvalItems, class_maps_for, collate_eval, grid_class_maps, maps_at_sizes, max_normalise,
                        size_groups)
from .interop import MapFileError
from .io import atomic_write, write_json
from .method.metrics import ConfusionMatrix, classifier_accuracy, mean_average_precision
from .method.model import KyamViT
from .method.gates import sparsity_rate
from .method.pseudo_masks import DEFAULT_THRESHOLDS, select_classes
from .run_data import dataset_info, open_split
from .score import SCORE_ONLY_FIELDS, main as score_main
from .split_scores import SplitScorer

__all__ = ["EvalConfig", "parse_blocks", "parse_head_weighting", "class_sources", "class_maps_for",
           "evaluate_split", "evaluate_run", "DEFAULT_THRESHOLDS"]

# Splits whose images trained the classifier under some protocol: their classes are the image labels.
TRAINING_SPLITS = ("train", "train_aug", "training")


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
    # Which classes each split draws: "auto" = image labels on training splits (train, train_aug,
    # training, the run's train_split), predictions elsewhere; "labels" | "predicted" everywhere;
    # or per split, "train:labels,val:predicted" (unlisted splits: auto).
    class_source: str = "auto"
    scales: tuple[float, ...] = (1.0,)   # inference scales of the training size (the paper: one scale)
    flip: bool = False                   # also mirrored passes, mirrored back and summed
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    batch_size: int = 64
    max_images: int = 0                  # 0 = the run's own images of each split; k > 0: at most k of them
    save_masks: bool = True
    export_maps: Literal["", "irn", "mctformer"] = ""  # also write <out>/maps_<format>/<split>/<id>.npy
    # dense CRF of the masks at the chosen t (needs the `crf` extra); DeepLab / CLIP-ES settings
    crf: bool = False
    crf_iterations: int = 10
    crf_pos_w: float = 3.0
    crf_pos_xy_std: float = 1.0
    crf_bi_w: float = 4.0
    crf_bi_xy_std: float = 67.0
    crf_bi_rgb_std: float = 3.0
    device: str = "auto"

    def validate(self) -> None:
        parse_blocks(self.blocks)
        parse_head_weighting(self.head_weighting)
        parse_class_source(self.class_source)
        if self.select_split not in self.splits:
            raise ConfigError(f"EvalConfig.select_split {self.select_split!r} is not in splits {list(self.splits)}")
        if 1.0 not in self.scales or any(s <= 0 for s in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"EvalConfig.scales {list(self.scales)}: distinct positive scales including 1.0 "
                              "(the classifier's own input size)")
        if self.crf_iterations < 1:
            raise ConfigError(f"EvalConfig.crf_iterations {self.crf_iterations} must be positive")

    def crf_params(self) -> CRFParams:
        return CRFParams(iterations=self.crf_iterations, pos_w=self.crf_pos_w, pos_xy_std=self.crf_pos_xy_std,
                         bi_w=self.crf_bi_w, bi_xy_std=self.crf_bi_xy_std, bi_rgb_std=self.crf_bi_rgb_std)


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


def parse_class_source(spec: str) -> str | dict[str, str]:
    """"auto" | "labels" | "predicted" as is; "train:labels,val:predicted" → {split: source}."""
    spec = spec.strip()
    if spec in ("auto", "labels", "predicted"):
        return spec
    chosen = {}
    for part in spec.split(","):
        split, _, source = part.strip().partition(":")
        if not split or source not in ("labels", "predicted"):
            raise ConfigError(f"EvalConfig.class_source {spec!r}: expected 'auto', 'labels', 'predicted' or "
                              "'split:labels|predicted,...'")
        chosen[split] = source
    return chosen


def class_sources(spec: str, splits: Sequence[str], *, train_split: str = "train") -> dict[str, str]:
    """The class source ("labels" or "predicted") of each split under `spec` (see EvalConfig.class_source)."""
    parsed = parse_class_source(spec)
    auto = {split: "labels" if split in (*TRAINING_SPLITS, train_split) else "predicted" for split in splits}
    if parsed == "auto":
        return auto
    if isinstance(parsed, str):
        return {split: parsed for split in splits}
    return {split: parsed.get(split, auto[split]) for split in splits}


def _probabilities(model: KyamViT, logits: torch.Tensor) -> torch.Tensor:
    return logits.float().sigmoid() if model.config.multi_label else logits.float().softmax(dim=1)


def evaluate_split(model: KyamViT, dataset, cfg: EvalConfig, *, split: str, class_source: str = "predicted",
                   background_score: float | None = None, mask_dir: Path | None = None,
                   crf_dir: Path | None = None, maps_dir: Path | None = None) -> dict[str, Any]:
    """One pass over a split: classifier metrics and pseudo-mask confusion matrices.

    Masks are scored against the original-size masks. With background: a (T, K, K) curve over
    cfg.thresholds, the mean-threshold rule, and — when `background_score` is given — masks at
    that t (written to `mask_dir`; with cfg.crf their CRF refinement, written to `crf_dir`).
    """
    device = next(model.parameters()).device
    info = dataset.dataset if isinstance(dataset, Subset) else dataset
    blocks, head_weighting = parse_blocks(cfg.blocks), parse_head_weighting(cfg.head_weighting)
    use_crf = cfg.crf and info.has_background and background_score is not None
    scorer = SplitScorer(num_classes=len(info.class_names), has_background=info.has_background,
                         thresholds=cfg.thresholds, background_score=background_score, mask_dir=mask_dir,
                         crf=cfg.crf_params() if use_crf else None, crf_dir=crf_dir,
                         export=cfg.export_maps or None, maps_dir=maps_dir)
    loader = DataLoader(EvalItems(dataset, with_raw_image=use_crf), batch_size=cfg.batch_size, shuffle=False,
                        collate_fn=collate_eval)
    logits_all, labels_all = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"{split} pseudo-masks", leave=False, mininterval=2.0):
            logits, grid_maps = grid_class_maps(model, batch["image"].to(device), scales=cfg.scales, flip=cfg.flip,
                                                blocks=blocks, head_weighting=head_weighting)
            probs, labels = _probabilities(model, logits), batch["labels"].to(device)
            selected = select_classes(probs, labels, source=class_source)
            logits_all.append(logits.float().cpu())
            labels_all.append(labels.cpu())
            sizes = [tuple(mask.shape) for mask in batch["mask"]]
            maps = maps_at_sizes(grid_maps, sizes)
            for positions in size_groups(sizes).values():
                index = torch.tensor(positions, device=device)
                scorer.add(max_normalise(torch.stack([maps[p] for p in positions])), probs[index], selected[index],
                           torch.stack([batch["mask"][p] for p in positions]).to(device),
                           [batch["id"][p] for p in positions],
                           [batch["raw_image"][p] for p in positions] if use_crf else None)
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    result: dict[str, Any] = {
        "split": split,
        "images": len(labels),
        "class_source": class_source,
        "classifier_acc": classifier_accuracy(logits, labels, multi_label=model.config.multi_label, from_logits=True),
        "classifier_map": mean_average_precision(_probabilities(model, logits), labels),
    }
    if info.has_background:
        result["curve"] = scorer.curve
        result["mean_threshold_cm"] = scorer.mean_threshold_cm
    if scorer.scored:
        result["cm"] = scorer.main_cm
    if use_crf:
        result["crf_cm"] = scorer.crf_cm
        result["crf_seconds_per_image"] = scorer.crf_seconds / max(scorer.images, 1)
    return result


def _curve_table(curve: torch.Tensor, thresholds: tuple[float, ...], split: str) -> pd.DataFrame:
    rows = []
    for t, matrix in zip(thresholds, curve):
        cm = ConfusionMatrix.from_matrix(matrix)
        rows.append({"split": split, "background_score": t, "miou": cm.miou(), "pixel_acc": cm.pixel_accuracy()})
    return pd.DataFrame(rows)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False)


def _run_limit(split: str, train_cfg: dict[str, Any], max_images: int) -> int:
    """How many images of `split` the run itself used (its seeded max_train/val_images subset), capped at `max_images`.

    Same rule as training (a prefix of one seeded permutation), so a cap keeps a subset of the
    trained images, and pseudo-masks exist for exactly the images a same-seed segmentation run
    with that many training images draws.
    """
    limit = {train_cfg.get("train_split", "train"): train_cfg.get("max_train_images", 0),
             train_cfg.get("val_split", "val"): train_cfg.get("max_val_images", 0)}.get(split, 0)
    if max_images > 0:
        limit = min(limit, max_images) if limit > 0 else max_images
    return limit


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
    # the run's data fields (its loader options: e.g. DFC2020 with Sentinel-1, 15 channels) and seed
    run = types.SimpleNamespace(**{"seed": 0, **train_cfg, "dataset": name,
                                   "data_root": cfg.data_root or train_cfg.get("data_root") or ""})
    image_size = tuple(loaded.model_config.image_size)
    sources = class_sources(cfg.class_source, cfg.splits, train_split=train_cfg.get("train_split", "train"))

    datasets = {}
    for split in cfg.splits:
        dataset = open_split(run, split, image_size=image_size, limit=_run_limit(split, train_cfg, cfg.max_images))
        info = dataset_info(dataset)
        check_compatible(loaded.model_config, num_classes=len(info.class_names), num_channels=info.num_channels,
                         source=str(run_dir / "model"))
        datasets[split] = dataset
    info = dataset_info(next(iter(datasets.values())))
    mask_names = (["background"] if info.has_background else []) + list(info.class_names)
    if cfg.crf and not info.has_background:
        raise ConfigError(f"EvalConfig.crf: the dense CRF refines the background rule; {name!r} has no background")

    summary: dict[str, Any] = {
        "run_dir": str(run_dir), "dataset": name, "class_source": sources, "blocks": cfg.blocks,
        "head_weighting": cfg.head_weighting, "scales": list(cfg.scales), "flip": cfg.flip,
        "has_background": info.has_background, "sparsity": sparsity_rate(model),
        "rule": "background_score" if info.has_background else "no_background",
        "resolution": "original", "crf": dataclasses.asdict(cfg.crf_params()) if cfg.crf else None,
        "splits": {},
    }
    curves, per_class, per_class_crf = [], [], []
    best_t = None
    if info.has_background:
        first = evaluate_split(model, datasets[cfg.select_split], cfg, split=cfg.select_split,
                               class_source=sources[cfg.select_split])
        table = _curve_table(first["curve"], cfg.thresholds, cfg.select_split)
        best_t = float(table.loc[table["miou"].idxmax(), "background_score"])
        summary["background_score"] = best_t
        summary["background_score_chosen_on"] = cfg.select_split
    for split, dataset in datasets.items():
        result = evaluate_split(
            model, dataset, cfg, split=split, class_source=sources[split], background_score=best_t,
            mask_dir=out_dir / "pseudo_masks" / split if cfg.save_masks else None,
            crf_dir=out_dir / "pseudo_masks_crf" / split if cfg.save_masks and cfg.crf else None,
            maps_dir=out_dir / f"maps_{cfg.export_maps}" / split if cfg.export_maps else None)
        cm: ConfusionMatrix = result["cm"]
        entry = {"images": result["images"], "class_source": sources[split], "miou": cm.miou(),
                 "pixel_acc": cm.pixel_accuracy(), "classifier_acc": result["classifier_acc"],
                 "classifier_map": result["classifier_map"]}
        if info.has_background:
            curves.append(_curve_table(result["curve"], cfg.thresholds, split))
            entry["mean_threshold_miou"] = result["mean_threshold_cm"].miou()
            entry["mean_threshold_pixel_acc"] = result["mean_threshold_cm"].pixel_accuracy()
        if "crf_cm" in result:
            entry["crf_miou"] = result["crf_cm"].miou()
            entry["crf_pixel_acc"] = result["crf_cm"].pixel_accuracy()
            entry["crf_seconds_per_image"] = result["crf_seconds_per_image"]
            per_class_crf.append(pd.DataFrame({"split": split, "class": mask_names,
                                               "iou": result["crf_cm"].per_class_iou().tolist()}))
        summary["splits"][split] = entry
        per_class.append(pd.DataFrame({"split": split, "class": mask_names, "iou": cm.per_class_iou().tolist()}))
    summary["eval_seconds"] = time.perf_counter() - started

    cfg.replace(out_dir=str(out_dir)).to_json(out_dir / "config.json")
    if curves:
        _write_csv(pd.concat(curves), out_dir / "threshold_curve.csv")
    _write_csv(pd.concat(per_class), out_dir / "per_class_iou.csv")
    if per_class_crf:
        _write_csv(pd.concat(per_class_crf), out_dir / "per_class_iou_crf.csv")
    write_json(out_dir / "metrics.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kyam_lib.evaluate --run_dir runs/x [--blocks last:3] [--class_source predicted] ...`

    With `--masks DIR`, `--maps DIR` or `--write_cls_labels FILE` it scores or writes files of any
    method instead (`kyam_lib.score`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        values = parse_overrides(args)
        if set(values) & set(SCORE_ONLY_FIELDS):
            return score_main(args)
        cfg = EvalConfig.from_dict({**EvalConfig().to_dict(), **values})
        summary = evaluate_run(cfg)
    except (ConfigError, CheckpointError, DatasetError, MapFileError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, entry in summary["splits"].items():
        crf = f"  with CRF {entry['crf_miou']:.3f}" if "crf_miou" in entry else ""
        print(f"{split} ({entry['class_source']} classes): pseudo-mask mIoU {entry['miou']:.3f}{crf}  "
              f"pixel acc {entry['pixel_acc']:.3f}  classifier acc {entry['classifier_acc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
