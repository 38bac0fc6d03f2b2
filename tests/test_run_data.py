"""run_data.open_split, the one way a run's dataset is opened: every caller gets the items its own code used to
build (build_dataset from the data root with the loader options, then the seeded subset)."""
import shutil
import types
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from kyam_lib.config import TrainConfig
from kyam_lib.data import build_dataset, default_data_root, ensure_dataset, seeded_subset
from kyam_lib.experiments.runs import _dataset_of
from kyam_lib.protocol import dataset_options
from kyam_lib.run_data import CachedItems, build_datasets, dataset_info, open_split
from kyam_lib.segmentation import PseudoMaskDataset, SegConfig, build_seg_datasets


def _same_items(mine, theirs) -> None:
    """Equal length, indices and items; augmented reads drawn from the same seed."""
    assert len(mine) == len(theirs)
    assert getattr(mine, "indices", None) == getattr(theirs, "indices", None)
    for index in range(len(mine)):
        torch.manual_seed(index)
        a = mine[index]
        torch.manual_seed(index)
        b = theirs[index]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key], key


def _built_before(cfg, split: str, *, augment: bool, limit: int, image_size=None):
    """What train.build_datasets, segmentation and runs._dataset_of each wrote out before open_split."""
    root = ensure_dataset(cfg.dataset, Path(cfg.data_root) if cfg.data_root else default_data_root())
    dataset = build_dataset(cfg.dataset, root, split, image_size=image_size or cfg.image_size, augment=augment,
                            **dataset_options(cfg))
    return seeded_subset(dataset, limit, cfg.seed)


def test_training_splits_are_the_ones_built_before(data_root):
    cfg = TrainConfig(data_root=str(data_root), image_size=(32, 32), max_train_images=10, max_val_images=6, seed=3)
    train_set, val_set = build_datasets(cfg)
    assert isinstance(train_set, Subset) and len(train_set) == 10
    _same_items(train_set, _built_before(cfg, "train", augment=True, limit=10))
    _same_items(val_set, _built_before(cfg, "val", augment=False, limit=6))
    cached, _ = build_datasets(cfg.replace(augment=False, cache_items=True))
    assert isinstance(cached, CachedItems)
    _same_items(cached.dataset, _built_before(cfg, "train", augment=False, limit=10))


def test_the_default_data_root_and_a_whole_split(data_root, monkeypatch):
    monkeypatch.setenv("KYAM_DATA_ROOT", str(data_root))
    cfg = TrainConfig(data_root="", image_size=(32, 32))
    _same_items(open_split(cfg, "val"), _built_before(cfg, "val", augment=False, limit=0))
    _same_items(_dataset_of(cfg.replace(data_root=str(data_root)), "train"),
                _built_before(cfg, "train", augment=False, limit=0))


def test_evaluation_opens_the_run_split_at_the_model_size(data_root):
    """evaluate_run: the run's stored config (a dict), its seed and subset, the model's input size."""
    stored = TrainConfig(data_root=str(data_root), image_size=(32, 32), seed=5).to_dict()
    run = types.SimpleNamespace(**stored)
    opened = open_split(run, "train", image_size=(16, 16), limit=7)
    before = seeded_subset(build_dataset("shapes", ensure_dataset("shapes", data_root), "train", image_size=(16, 16),
                                         augment=False, **dataset_options(run, "shapes")), 7, 5)
    _same_items(opened, before)
    assert opened[0]["image"].shape[-2:] == (16, 16)


def test_segmentation_pseudo_masks_wrap_the_split_before_the_subset(data_root, tmp_path):
    masks = tmp_path / "pseudo"
    masks.mkdir()
    for path in (data_root / "shapes" / "SegmentationClass").glob("train_*.png"):
        shutil.copy(path, masks / path.name)
    cfg = SegConfig(data_root=str(data_root), image_size=(32, 32), masks=str(masks), max_train_images=9,
                    max_val_images=5, seed=2, augment=False)
    train_set, val_set = build_seg_datasets(cfg)
    assert isinstance(dataset_info(train_set), PseudoMaskDataset)
    root = ensure_dataset("shapes", data_root)
    before = seeded_subset(PseudoMaskDataset(build_dataset("shapes", root, "train", image_size=(32, 32)), masks), 9, 2)
    _same_items(train_set, before)
    _same_items(val_set, _built_before(cfg, "val", augment=False, limit=5))


def test_a_wrapper_sees_the_whole_split(data_root):
    seen = []
    cfg = TrainConfig(data_root=str(data_root), image_size=(32, 32), seed=1)
    subset = open_split(cfg, "train", limit=4, wrap=lambda dataset: seen.append(len(dataset)) or dataset)
    assert seen == [len(open_split(cfg, "train"))] and len(subset) == 4
    with pytest.raises(ValueError, match="unknown dataset"):
        open_split(cfg.replace(dataset="imagenet"), "train")
