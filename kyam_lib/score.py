"""Score any method's pseudo-masks or class maps against a dataset's ground truth, with kyam's metric.

    python -m kyam_lib.evaluate --masks DIR --dataset voc --data_root R --split train --out OUT
    python -m kyam_lib.evaluate --maps DIR --map_format irn --dataset voc --data_root R --split train --out OUT
    python -m kyam_lib.evaluate --write_cls_labels OUT/cls_labels.npy --dataset voc --data_root R --split train_aug

`--masks`: a folder of index or palette PNGs `<id>.png` at each image's size. mIoU from one
confusion matrix over the split (background counted as a class, ground-truth 255 ignored), per-class
IoU, pixel accuracy. A predicted 255 ("no label", as some refinement tools write) counts as a miss for
the true class and as no class's false positive. `--maps`: IRN or MCTformer `.npy` maps
(`kyam_lib.interop`) made into pseudo-masks with kyam's rules: the background t-curve, the best t
(or `--background_score`), the mean-threshold rule beside it. Everything is read and checked before
anything is written: a missing file, a size mismatch or a value that is not a class index is an
error naming the file, and then nothing is written.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from kyam_lib.config import ConfigBase, ConfigError, parse_overrides
from kyam_lib.data import DatasetError, build_dataset, default_data_root
from kyam_lib.data.base import IGNORE_INDEX
from kyam_lib.inference import max_normalise
from kyam_lib.interop import MapFileError, read_class_maps, read_cls_labels, write_cls_labels
from kyam_lib.io import atomic_write, write_json
from kyam_lib.method.metrics import ConfusionMatrix
from kyam_lib.method.pseudo_masks import DEFAULT_THRESHOLDS, select_classes
from kyam_lib.split_scores import SplitScorer

__all__ = ["ScoreConfig", "SCORE_ONLY_FIELDS", "score_masks", "score_maps", "cls_labels_of", "main"]

# Any of these on the evaluate command line selects this module instead of a run's evaluation.
SCORE_ONLY_FIELDS = ("masks", "maps", "write_cls_labels")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreConfig(ConfigBase):
    """Scoring of a folder of masks or maps written by any method."""

    masks: str = ""                      # folder of <id>.png index/palette masks
    maps: str = ""                       # folder of <id>.npy class-map dicts
    map_format: Literal["irn", "mctformer"] = "irn"
    write_cls_labels: str = ""           # write {id: multi-hot} of the split to this .npy file
    cls_labels: str = ""                 # maps: classes from this cls_labels.npy instead of the maps' keys
    classes: Literal["maps", "labels"] = "maps"  # maps: the classes each file holds, or the dataset's image labels
    dataset: str = "voc"
    data_root: str = ""                  # "" = $KYAM_DATA_ROOT
    split: str = "train"
    out: str = ""                        # output folder (required for masks and maps)
    background_score: float | None = None  # maps: t of the written masks; None = best t on this split
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    save_masks: bool = True              # maps: write <out>/pseudo_masks/<split>/<id>.png

    def validate(self) -> None:
        chosen = [name for name in SCORE_ONLY_FIELDS if getattr(self, name)]
        if len(chosen) != 1:
            raise ConfigError(f"ScoreConfig: give exactly one of --masks, --maps, --write_cls_labels (got {chosen})")
        if (self.masks or self.maps) and not self.out:
            raise ConfigError("ScoreConfig.out: an output folder is required")


def _dataset(cfg: ScoreConfig):
    return build_dataset(cfg.dataset, Path(cfg.data_root or default_data_root()), cfg.split, image_size=None,
                         augment=False)


def _read_mask_png(path: Path, shape: tuple[int, int], num_classes: int) -> np.ndarray:
    if not path.is_file():
        raise MapFileError(f"{path}: mask file not found")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L", "I", "I;16"):
                raise MapFileError(f"{path}: expected an index or palette PNG, got mode {image.mode!r}")
            mask = np.asarray(image).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, MapFileError):
            raise
        raise MapFileError(f"{path}: unreadable mask ({err})") from err
    if mask.shape != shape:
        raise MapFileError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH), the image is {shape[1]}x{shape[0]}")
    bad = (mask < 0) | ((mask >= num_classes) & (mask != IGNORE_INDEX))
    if bad.any():
        values = sorted(int(v) for v in np.unique(mask[bad]))[:10]
        raise MapFileError(f"{path}: value(s) {values} are not class indices (0..{num_classes - 1}, or {IGNORE_INDEX})")
    return mask


def _scores(matrix: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """Per-class IoU, mIoU and pixel accuracy from (K, K + 1) counts; column K = predicted "no label"."""
    matrix = matrix.double()
    K = matrix.shape[0]
    intersection = matrix[:, :K].diagonal()
    union = matrix.sum(1) + matrix[:, :K].sum(0) - intersection
    iou = torch.where(union > 0, intersection / union.clamp_min(1), torch.full_like(union, math.nan))
    present = ~torch.isnan(iou)
    miou = float(iou[present].mean()) if present.any() else math.nan
    total = float(matrix.sum())
    return iou.numpy(), miou, float(intersection.sum()) / total if total else math.nan


def _mask_names(dataset) -> list[str]:
    return (["background"] if dataset.has_background else []) + list(dataset.class_names)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False)


def score_masks(cfg: ScoreConfig) -> dict[str, Any]:
    """Score the PNG masks in cfg.masks; writes <out>/metrics.json and <out>/per_class_iou.csv."""
    dataset = _dataset(cfg)
    folder = Path(cfg.masks)
    if not folder.is_dir():
        raise MapFileError(f"{folder}: mask folder not found")
    K = dataset.num_mask_classes
    # Column K counts predicted 255 on valid pixels: a miss, but no class's false positive.
    counts = ConfusionMatrix(K + 1)
    for index, image_id in enumerate(dataset.ids):
        target = torch.from_numpy(dataset.read_mask(index))
        pred = torch.from_numpy(_read_mask_png(folder / f"{image_id}.png", tuple(target.shape), K))
        counts.update(torch.where(pred == IGNORE_INDEX, K, pred), target)
    iou, miou, pixel_acc = _scores(counts.matrix[:K])
    summary = {"miou": miou, "pixel_acc": pixel_acc, "split": cfg.split, "masks": str(folder),
               "images": len(dataset), "dataset": cfg.dataset, "data_root": str(dataset.root),
               "unlabelled_pixels": int(counts.matrix[:K, K].sum())}
    out = Path(cfg.out)
    _write_csv(pd.DataFrame({"class": _mask_names(dataset), "iou": iou}), out / "per_class_iou.csv")
    write_json(out / "metrics.json", summary)
    return summary


def _map_pass(cfg: ScoreConfig, dataset, labels: dict[str, np.ndarray] | None, scorer: SplitScorer) -> None:
    folder = Path(cfg.maps)
    for index, image_id in enumerate(dataset.ids):
        target = torch.from_numpy(dataset.read_mask(index))
        maps, present = read_class_maps(folder / f"{image_id}.npy", cfg.map_format, num_classes=dataset.num_classes,
                                        size=tuple(target.shape))
        if labels is not None:
            present = torch.from_numpy(labels[image_id]).bool()
        elif cfg.classes == "labels":
            present = torch.from_numpy(dataset.image_labels(index)).bool()
        # The formats carry no class probabilities: overlaps of the mean-threshold rules go by class index.
        selected = select_classes(present[None].float(), present[None].float(), source="labels")
        scorer.add(max_normalise(maps[None]), present[None].float(), selected, target[None], [image_id])


def score_maps(cfg: ScoreConfig) -> dict[str, Any]:
    """Pseudo-masks from the class maps in cfg.maps, scored; writes metrics, curve, per-class IoU and masks."""
    dataset = _dataset(cfg)
    if not Path(cfg.maps).is_dir():
        raise MapFileError(f"{cfg.maps}: map folder not found")
    labels = read_cls_labels(cfg.cls_labels, dataset.ids, num_classes=dataset.num_classes) if cfg.cls_labels else None
    out = Path(cfg.out)
    common = dict(num_classes=dataset.num_classes, has_background=dataset.has_background, thresholds=cfg.thresholds)
    summary: dict[str, Any] = {"split": cfg.split, "maps": cfg.maps, "map_format": cfg.map_format,
                               "images": len(dataset), "dataset": cfg.dataset, "data_root": str(dataset.root),
                               "class_source": "cls_labels" if labels is not None else cfg.classes}
    best_t, curve = cfg.background_score, None
    if dataset.has_background:
        first = SplitScorer(**common)
        _map_pass(cfg, dataset, labels, first)
        curve = pd.DataFrame([{"split": cfg.split, "background_score": t, "miou": cm.miou(),
                               "pixel_acc": cm.pixel_accuracy()}
                              for t, cm in zip(cfg.thresholds, map(ConfusionMatrix.from_matrix, first.curve))])
        if best_t is None:
            best_t = float(curve.loc[curve["miou"].idxmax(), "background_score"])
            summary["background_score_chosen_on"] = cfg.split
        summary["background_score"] = best_t
        summary["mean_threshold_miou"] = first.mean_threshold_cm.miou()
    mask_dir = out / "pseudo_masks" / cfg.split if cfg.save_masks else None
    scorer = SplitScorer(**common, background_score=best_t, mask_dir=mask_dir)
    _map_pass(cfg, dataset, labels, scorer)
    summary.update(miou=scorer.main_cm.miou(), pixel_acc=scorer.main_cm.pixel_accuracy())
    if curve is not None:
        _write_csv(curve, out / "threshold_curve.csv")
    _write_csv(pd.DataFrame({"class": _mask_names(dataset), "iou": scorer.main_cm.per_class_iou().tolist()}),
               out / "per_class_iou.csv")
    write_json(out / "metrics.json", summary)
    return summary


def cls_labels_of(dataset) -> dict[str, np.ndarray]:
    """{image id: (C,) float32 image labels} of every image of a dataset."""
    return {image_id: dataset.image_labels(index) for index, image_id in enumerate(dataset.ids)}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = ScoreConfig.from_dict(parse_overrides(list(sys.argv[1:] if argv is None else argv)))
        if cfg.write_cls_labels:
            write_cls_labels(cfg.write_cls_labels, cls_labels_of(_dataset(cfg)))
            print(f"wrote the image labels of {cfg.dataset} {cfg.split} to {cfg.write_cls_labels}")
            return 0
        summary = score_masks(cfg) if cfg.masks else score_maps(cfg)
    except (ConfigError, DatasetError, MapFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{cfg.split}: mIoU {summary['miou']:.4f}  pixel acc {summary['pixel_acc']:.4f}  "
          f"({summary['images']} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
