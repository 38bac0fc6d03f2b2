"""The datasets of a run: `open_split`, the one way training, evaluation, segmentation and the
experiments open a split of a run's dataset, and the wrappers the training loops put around it.

    train_set = open_split(cfg, cfg.train_split, augment=cfg.augment, limit=cfg.max_train_images)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset

from . import distributed as dist
from .config import ConfigError, TrainConfig
from .data import DATASET_NAMES, build_dataset, default_data_root, ensure_dataset, seeded_subset
from .protocol import dataset_options

__all__ = ["data_root_of", "open_split", "build_datasets", "CachedItems", "SeededAugmentation", "dataset_info"]


def data_root_of(cfg: Any) -> Path:
    """The data root of run config `cfg`: its `data_root`, else `default_data_root()`."""
    return Path(cfg.data_root) if cfg.data_root else default_data_root()


def open_split(cfg: Any, split: str, *, image_size: int | tuple[int, int] | None = None, augment: bool = False,
               limit: int = 0, wrap: Callable[[Dataset], Dataset] | None = None) -> Dataset:
    """Split `split` of the dataset of run config `cfg` (a TrainConfig, a SegConfig, or any object with
    their data fields: dataset, data_root, image_size, seed and the loader options).

    The dataset lives under `data_root_of(cfg)` (the embedded SYNTHETIC sets are generated there on
    first use) and is read with cfg's loader options (`protocol.dataset_options`), at `image_size`
    (default cfg.image_size). `wrap` is applied to the whole split (segmentation: its pseudo-masks);
    then `limit` > 0 keeps the seeded subset of that many images (`data.seeded_subset`, seed cfg.seed).
    """
    root = ensure_dataset(cfg.dataset, data_root_of(cfg))
    dataset = build_dataset(cfg.dataset, root, split, image_size=cfg.image_size if image_size is None else image_size,
                            augment=augment, **dataset_options(cfg))
    if wrap is not None:
        dataset = wrap(dataset)
    return seeded_subset(dataset, limit, cfg.seed)


def build_datasets(cfg: TrainConfig):
    """(train, val) datasets of a training run; the embedded synthetic sets are generated on first use."""
    if cfg.dataset not in DATASET_NAMES:
        raise ConfigError(f"TrainConfig.dataset: unknown dataset {cfg.dataset!r}; "
                          f"expected one of {list(DATASET_NAMES)}")
    train_set = open_split(cfg, cfg.train_split, augment=cfg.augment, limit=cfg.max_train_images)
    val_set = open_split(cfg, cfg.val_split, limit=cfg.max_val_images)
    if cfg.cache_items:
        return CachedItems(train_set), CachedItems(val_set)
    return train_set, val_set


class CachedItems(Dataset):
    """Keeps each item of an un-augmented dataset after its first read (same items, decoded once).

    Decoding a 64 px JPEG and PNG costs about as much as a tiny ViT's training step on the CPU.
    The cache lives in the process that reads (with workers, one per worker).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = self.dataset[index]
        return item


def dataset_info(dataset) -> Any:
    """The loader behind a Subset / SeededAugmentation / CachedItems wrapper (class names, channels, ...)."""
    while isinstance(dataset, (Subset, SeededAugmentation, CachedItems)):
        dataset = dataset.dataset
    return dataset


class SeededAugmentation(Dataset):
    """Draws each item's random augmentation from a seed keyed by (seed, epoch, position).

    The loaders' transforms draw from torch's global generator; re-seeding it per item (and
    restoring it after) makes the augmentation of a sample independent of the process or worker
    that loads it and of the order of loading: 2 processes x batch b see exactly the images of
    1 process x batch 2b, and a resumed run sees those of an uninterrupted one.
    """

    def __init__(self, dataset: Dataset, *, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        # In shared memory: persistent DataLoader workers keep their copy of the dataset across
        # epochs and still read the current epoch.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating."""
        self._epoch[0] = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(dist.sample_seed(self.seed, self.epoch, index, stream=dist.AUGMENT_STREAM))
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)
