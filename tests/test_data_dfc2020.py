"""DFC2020 loader on a format-exact fixture: 13/15 bands, label remap, 10 % label rule, releases."""
from __future__ import annotations

import numpy as np
import pytest

from data_fixtures import write_dfc2020
from kyam_lib.data import DFC2020Dataset, build_dataset
from kyam_lib.data.transforms import S1_MEAN, S1_STD, S2_MEAN, S2_STD


@pytest.fixture(scope="module")
def dfc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfc")
    return root, write_dfc2020(root)


def test_remap_and_ten_percent_rule(dfc_root):
    root, info = dfc_root
    ds = build_dataset("dfc2020", root, "train")  # "train" = the test release
    assert ds.release == "test" and ds.ids == ["ROIs0000_test_s2_0_p5", "ROIs0000_test_s2_0_p1"]  # CSV order
    assert ds.class_names == ["forest", "shrubland", "grassland", "wetland", "cropland", "urban", "barren", "water"]
    assert not ds.has_background and ds.num_channels == 13 and ds.multi_label
    item = ds[1]
    expected = np.zeros((16, 16), np.int64)
    expected[:, :8] = 0            # forest (DFC 1)
    expected[0:4, 0:5] = 5         # urban (DFC 7)
    expected[:, 8:] = 7            # water (DFC 10)
    expected[12:16, 12:16] = 255   # savanna (DFC 3) is dropped
    assert np.array_equal(item["mask"].numpy(), expected)
    # forest 108 and water 112 of 240 valid pixels are labels; urban (20 < 24) is not.
    assert item["labels"].nonzero().flatten().tolist() == [0, 7]
    snow = ds[0]
    assert (snow["mask"] == 255).all() and snow["labels"].sum() == 0  # snow/ice is dropped too


def test_band_scaling_and_normalisation(dfc_root):
    root, info = dfc_root
    ds = DFC2020Dataset(root, "train", use_s1=True)
    assert ds.num_channels == 15
    image = ds[1]["image"].numpy()
    s2, s1 = info["s2"][("test", 1)].astype(np.float32), info["s1"][("test", 1)]
    reflectance = np.clip(s2, 0, 10000) / 10000
    assert np.allclose(image[:13], (reflectance - np.array(S2_MEAN)[:, None, None]) / np.array(S2_STD)[:, None, None],
                       atol=1e-5)
    assert image[0, 0, 0] == pytest.approx((1.0 - S2_MEAN[0]) / S2_STD[0], abs=1e-5)  # 12000 DN clipped
    db = np.clip(s1, -25, 0)
    assert np.allclose(image[13:], (db - np.array(S1_MEAN)[:, None, None]) / np.array(S1_STD)[:, None, None],
                       atol=1e-5)
    display, mask = ds.read_raw(1)
    assert display.shape == (16, 16, 3) and 0 <= display.min() and display.max() <= 1
    assert np.allclose(display[..., 0], np.clip(reflectance[3] / 0.3, 0, 1))  # red = B04


def test_validation_release_without_csv_and_contiguous_tiffs(tmp_path):
    write_dfc2020(tmp_path / "DFC2020", planar="contiguous", observations=False)
    train = build_dataset("dfc2020", tmp_path, "train")
    assert train.ids == ["ROIs0000_test_s2_0_p1", "ROIs0000_test_s2_0_p5"]  # listed, sorted by patch id
    assert train[0]["image"].shape == (13, 16, 16)
    val = build_dataset("dfc2020", tmp_path, "validation", image_size=8)
    assert val.ids == ["ROIs0000_validation_s2_0_p0"]
    item = val[0]
    assert item["image"].shape == (13, 8, 8) and (item["mask"] == 2).all()  # DFC 4 = grassland
    assert item["labels"].nonzero().flatten().tolist() == [2]


def test_igbp_labels(dfc_root):
    root, info = dfc_root
    ds = DFC2020Dataset(root, "val", label_source="lc")
    mask = ds.read_mask(0)
    assert (mask[2:, :4] == 0).all()      # IGBP 5 mixed forest → forest
    assert (mask[2:, 4:6] == 255).all()   # IGBP 9 savanna → ignore
    assert (mask[2:, 6:] == 4).all()      # IGBP 12 croplands → cropland
    assert (mask[:2] == 7).all()          # IGBP 17 water
    assert ds.image_labels(0).nonzero()[0].tolist() == [0, 4, 7]
