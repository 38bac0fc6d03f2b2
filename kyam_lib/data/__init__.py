"""Datasets: one loader interface over the paper's five datasets and the two embedded SYNTHETIC sets.

    dataset = build_dataset("shapes", ensure_dataset("shapes", default_data_root()), "train",
                            image_size=64, augment=True)
    item = dataset[0]   # image (C, H, W) float32, mask (H, W) int64 (255 = ignore),
                        # labels (K,) float32, id str, index int

"shapes" (VOC layout, read by the VOC loader through its labelmap.txt) and "regions" (DFC2020
layout, read by the DFC2020 loader) are SYNTHETIC and generated on first use.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

from .ade20k import ADE20KDataset, resolve_ade20k_root
from .base import IGNORE_INDEX, DatasetError, DatasetNotFoundError, KyamDataset, seeded_subset
from .coco import COCODataset, resolve_coco_root
from .dfc2020 import DFC2020Dataset, resolve_dfc2020_root
from .endotect import EndoTectDataset, resolve_endotect_root
from .synthetic import GENERATOR_VERSIONS, generate_regions, generate_shapes, generator_version
from .voc import VOCDataset, resolve_voc_root

__all__ = [
    "seeded_subset",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "DatasetError",
    "DatasetNotFoundError",
    "KyamDataset",
    "VOCDataset",
    "COCODataset",
    "ADE20KDataset",
    "DFC2020Dataset",
    "EndoTectDataset",
    "build_dataset",
    "default_data_root",
    "ensure_dataset",
    "generate_shapes",
    "generate_regions",
]

DATASET_NAMES = ("voc", "coco", "ade20k", "dfc2020", "endotect", "shapes", "regions")
_LOADERS: dict[str, type[KyamDataset]] = {
    "voc": VOCDataset, "coco": COCODataset, "ade20k": ADE20KDataset, "dfc2020": DFC2020Dataset,
    "endotect": EndoTectDataset, "shapes": VOCDataset, "regions": DFC2020Dataset,
}
_RESOLVERS: dict[str, Callable[[str | Path], Path]] = {
    "voc": resolve_voc_root, "coco": resolve_coco_root, "ade20k": resolve_ade20k_root,
    "dfc2020": resolve_dfc2020_root, "endotect": resolve_endotect_root,
}
_GENERATORS = {"shapes": generate_shapes, "regions": generate_regions}
# A file that only a complete embedded set has (they are published by one rename).
_EMBEDDED_MARKER = "README.txt"


def default_data_root() -> Path:
    """$KYAM_DATA_ROOT, else ``<repo>/data``."""
    env = os.environ.get("KYAM_DATA_ROOT", "")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def ensure_dataset(name: str, root: str | Path | None = None) -> Path:
    """The folder of dataset `name` under data root `root` (default `default_data_root()`).

    Embedded SYNTHETIC sets are generated into ``root/name`` on first use, and regenerated
    when they were written by an older generator version. Generation writes a temporary
    folder and renames it into place, so a killed run never leaves a half set; when two
    processes race, the first rename wins. Real datasets are only located: the error of a
    missing one shows the expected layout.
    """
    _check_name(name)
    root = Path(root).expanduser() if root is not None else default_data_root()
    if name not in _GENERATORS:
        return _RESOLVERS[name](root)
    if root.name == name and (root / _EMBEDDED_MARKER).is_file() and not (root / name).exists():
        root = root.parent  # `root` is already the set's own folder
    target = root / name
    current = GENERATOR_VERSIONS[name]
    if (target / _EMBEDDED_MARKER).is_file():
        found = generator_version(target)
        if found == current:
            return target
        print(f"{target}: written by generator version {found}, current is {current}; regenerating", flush=True)
        _replace(name, target)
        return target
    _remove_stale_partials(root, name)
    try:
        _GENERATORS[name](target)
    except FileExistsError:
        if not (target / _EMBEDDED_MARKER).is_file():
            raise
    return target


def _replace(name: str, target: Path) -> None:
    """Generate a fresh set beside `target`, then swap it in (old set moved aside, then deleted)."""
    fresh = target.parent / f".{name}.partial-new-{os.getpid()}"
    stale = target.parent / f".{name}.partial-old-{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    _GENERATORS[name](fresh)
    try:
        try:
            os.rename(target, stale)
        except FileNotFoundError:
            pass  # another process is swapping; installing ours below is as good
        try:
            os.rename(fresh, target)
        except OSError:
            # Another process installed its set first; it is the same (generation is deterministic).
            if generator_version(target) != GENERATOR_VERSIONS[name]:
                raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


def _remove_stale_partials(root: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Delete temporary folders left by killed generations (old enough not to be in progress)."""
    if not root.is_dir():
        return
    for partial in root.glob(f".{name}.partial-*"):
        if time.time() - partial.stat().st_mtime > max_age_s:
            shutil.rmtree(partial, ignore_errors=True)


def build_dataset(name: str, root: str | Path, split: str, *, image_size: int | tuple[int, int] | None = None,
                  augment: bool = False, **options) -> KyamDataset:
    """Dataset `name` from `root` — the dataset's folder or the data root above it.

    name: voc | coco | ade20k | dfc2020 | endotect | shapes | regions. `options` go to the
    loader (e.g. year=2017 for coco, use_s1=True for dfc2020/regions, other_as_class for
    ade20k, subset="lower-gi" for endotect, split_mode="official_random" for voc). The
    embedded sets are generated under the data root when missing.
    """
    _check_name(name)
    if root is None:
        root = default_data_root()
    if name in _GENERATORS:
        root = Path(root).expanduser()
        if not (root / _EMBEDDED_MARKER).is_file():
            root = ensure_dataset(name, root.parent if root.name == name else root)
    dataset = _LOADERS[name](root, split, image_size=image_size, augment=augment, **options)
    dataset.name = name
    return dataset
