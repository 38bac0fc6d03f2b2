"""Where the paper's protocol meets a run: split resolution, loader options, DataLoader placement.

- ``train_split="auto"`` (the `paper` preset): VOC trains on ``train_aug`` (SBD, 10,582 images) when
  ``SegmentationClassAug/`` or ``ImageSets/Segmentation/train_aug.txt`` is present, else on ``train``;
  every other dataset on its training split. The resolved name is what config.json records.
- `dataset_options`: the TrainConfig / SegConfig loader fields that apply to a dataset, as keyword
  arguments of `kyam_lib.data.build_dataset`.
- `PLACEMENT_FIELDS`: fields that say where or how fast a run executes, not what it computes; a
  run cache and a resume ignore them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .data import default_data_root, ensure_dataset

__all__ = ["PLACEMENT_FIELDS", "AUTO_SPLIT", "dataset_options", "resolve_train_split", "resolve_num_workers",
           "computed_fields"]

AUTO_SPLIT = "auto"
PLACEMENT_FIELDS = frozenset({
    "out_dir", "data_root", "device", "num_workers", "persistent_workers", "keep_checkpoints",
    "checkpoint_every", "snapshot_every", "finite_check_every",
})
# Loader fields and the datasets (and loader keyword) they apply to.
_OPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "coco_year": (("coco",), "year"),
    "ade20k_other_as_class": (("ade20k",), "other_as_class"),
    "dfc2020_use_s1": (("dfc2020", "regions"), "use_s1"),
    "endotect_subset": (("endotect",), "subset"),
    "split_seed": (("endotect",), "split_seed"),
    "train_fraction": (("endotect",), "train_fraction"),
    "voc_split_mode": (("voc", "shapes"), "split_mode"),
}
_VOC_RANDOM = ("split_seed", "train_fraction")


def dataset_options(cfg: Any, dataset: str | None = None) -> dict[str, Any]:
    """The loader keyword arguments of `cfg`'s loader fields that apply to `dataset` (default cfg.dataset).

    Only values that differ from the loaders' defaults are passed, so a config without loader
    fields (or with their defaults) builds exactly the dataset it always did.
    """
    dataset = dataset or cfg.dataset
    defaults = {"coco_year": 2014, "ade20k_other_as_class": True, "dfc2020_use_s1": False,
                "endotect_subset": "all", "split_seed": 0, "train_fraction": 0.7, "voc_split_mode": "standard"}
    options: dict[str, Any] = {}
    for field, (datasets, keyword) in _OPTIONS.items():
        value = getattr(cfg, field, defaults[field])
        if dataset in datasets and value != defaults[field]:
            options[keyword] = value
    if dataset in ("voc", "shapes") and getattr(cfg, "voc_split_mode", "standard") == "official_random":
        for field in _VOC_RANDOM:
            value = getattr(cfg, field, defaults[field])
            if value != defaults[field]:
                options[field] = value
    return options


def _voc_has_train_aug(dataset_root: Path) -> bool:
    return ((dataset_root / "SegmentationClassAug").is_dir()
            or (dataset_root / "ImageSets" / "Segmentation" / "train_aug.txt").is_file())


def resolve_train_split(cfg: Any) -> tuple[Any, str | None]:
    """(cfg with train_split "auto" replaced by the split it means, a sentence saying why, or None)."""
    if cfg.train_split != AUTO_SPLIT:
        return cfg, None
    if cfg.dataset == "voc":
        root = ensure_dataset("voc", Path(cfg.data_root) if cfg.data_root else default_data_root())
        if _voc_has_train_aug(root):
            return cfg.replace(train_split="train_aug"), (
                f"train split: train_aug (SBD masks found: {root}/SegmentationClassAug or train_aug.txt)")
        return cfg.replace(train_split="train"), (
            f"train split: train (no SegmentationClassAug/ or train_aug.txt in {root}; the peers train on "
            "train_aug, 10,582 images — add SBD's SegmentationClassAug for comparable numbers)")
    split = "training" if cfg.dataset == "ade20k" else "train"
    return cfg.replace(train_split=split), f"train split: {split}"


def resolve_num_workers(num_workers: int, *, processes: int = 1) -> int:
    """-1 → one worker per CPU this process may use (shared among `processes`), less one, at most 8."""
    if num_workers >= 0:
        return num_workers
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus // max(1, processes) - 1))


def computed_fields(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the placement fields: what decides the trained model."""
    return {k: v for k, v in values.items() if k not in PLACEMENT_FIELDS}
