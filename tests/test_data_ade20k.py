"""ADE20K loader on a format-exact fixture: 151 classes with "other" (default) or 150 + background."""
from __future__ import annotations

import numpy as np
import pytest

from data_fixtures import write_ade20k
from kyam_lib.data import ADE20KDataset, build_dataset
from kyam_lib.data.ade20k import ADE20K_CLASSES


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade") / "ADEChallengeData2016"
    return root, write_ade20k(root)


def test_other_as_class_default(ade_root):
    root, info = ade_root
    ds = build_dataset("ade20k", root, "train")  # "train" names the "training" folder
    assert ds.ids == ["ADE_train_00000001", "ADE_train_00000002"]
    assert len(ds.class_names) == 151 and ds.class_names[0] == "other" and ds.class_names[1] == "wall"
    assert ds.class_names[150] == "flag" and not ds.has_background and ds.num_mask_classes == 151
    item = ds[0]
    assert item["image"].shape == (3, 10, 12)
    assert np.array_equal(item["mask"].numpy(), info["masks"][("training", "ADE_train_00000001")])
    assert item["labels"].nonzero().flatten().tolist() == [0, 1, 150]  # other, wall, flag
    assert ds[1]["labels"].nonzero().flatten().tolist() == [3]  # sky


def test_other_as_background(ade_root):
    root, info = ade_root
    ds = ADE20KDataset(root, "train", other_as_class=False)
    assert ds.class_names == list(ADE20K_CLASSES) and ds.has_background and ds.num_mask_classes == 151
    assert ds[0]["labels"].nonzero().flatten().tolist() == [0, 149]  # wall, flag; "other" is background
    val = ADE20KDataset(root, "val", other_as_class=False)
    assert val.ids == ["ADE_val_00000001"] and val[0]["labels"].sum() == 0


def test_object_info_names(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write_ade20k(root)
    rows = "".join(f"{k},0.1,1,1,name{k};synonym\n" for k in range(150, 0, -1))
    (root / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n" + rows)
    ds = build_dataset("ade20k", tmp_path, "val")  # the data root above ADEChallengeData2016
    assert ds.class_names[:3] == ["other", "name1", "name2"] and ds.class_names[-1] == "name150"
