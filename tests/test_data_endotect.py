"""EndoTect / HyperKvasir loader on a format-exact fixture: class folders, polyp masks, seeded split."""
from __future__ import annotations

import numpy as np
import pytest

from data_fixtures import ENDOTECT_IMAGES, polyp_mask, write_endotect
from kyam_lib.data import EndoTectDataset, build_dataset
from kyam_lib.data.endotect import ENDOTECT_CLASSES, ENDOTECT_LOWER_GI_CLASSES


@pytest.fixture(scope="module")
def endo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("endo") / "hyper-kvasir"
    return root, write_endotect(root)


def _all(root, **options):
    train = EndoTectDataset(root, "train", **options)
    val = EndoTectDataset(root, "val", **options)
    return train, val


def test_classes_and_single_labels(endo_root):
    root, _ = endo_root
    ds = build_dataset("endotect", root, "train")
    assert len(ds.class_names) == 23 and ds.class_names == sorted(ds.class_names) == list(ENDOTECT_CLASSES)
    assert not ds.multi_label and ds.has_background
    for index in range(len(ds)):
        labels = ds[index]["labels"]
        assert labels.sum() == 1
        folder = next(f for f, stems in ENDOTECT_IMAGES.items() if ds.ids[index] in stems)
        assert ds.class_names[int(labels.argmax())] == folder.rsplit("/", 1)[1]


def test_seeded_70_30_split(endo_root):
    root, _ = endo_root
    train, val = _all(root, split_seed=1)
    all_ids = sorted(s for stems in ENDOTECT_IMAGES.values() for s in stems)
    assert len(train) == 7 and len(val) == 3 and sorted(train.ids + val.ids) == all_ids
    assert EndoTectDataset(root, "train", split_seed=1).ids == train.ids
    assert any(EndoTectDataset(root, "train", split_seed=s).ids != train.ids for s in range(2, 6))


def test_polyp_masks_and_unknown_masks(endo_root):
    root, _ = endo_root
    ds = EndoTectDataset(root, "train", train_fraction=1.0)  # every image
    polyp = ENDOTECT_CLASSES.index("polyps") + 1
    reference = polyp_mask() > 0
    core = np.zeros_like(reference)
    core[8:16, 10:22] = True           # 2 px inside the mask edge
    far = np.ones_like(reference)
    far[4:20, 6:26] = False            # 2 px outside it
    for stem in ("p01", "p02"):
        mask = ds.read_mask(ds.ids.index(stem))
        assert set(np.unique(mask).tolist()) == {0, polyp}
        assert (mask[core] == polyp).all() and (mask[far] == 0).all()
        assert (mask == polyp).sum() == pytest.approx(reference.sum(), abs=8)
    no_mask = ds.read_mask(ds.ids.index("p03"))
    assert no_mask.shape == (24, 32) and (no_mask == 255).all()


def test_lower_gi_subset(endo_root):
    root, _ = endo_root
    train, val = _all(root, subset="lower-gi")
    assert train.class_names == list(ENDOTECT_LOWER_GI_CLASSES) and len(train.class_names) == 16
    assert not {"z01", "z02", "e01"} & set(train.ids + val.ids) and len(train) + len(val) == 7
