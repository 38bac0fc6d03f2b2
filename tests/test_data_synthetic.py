"""The embedded SYNTHETIC sets: determinism, the fairness properties, loading, and ensure_dataset."""
from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

import kyam_lib.data as data
from kyam_lib.data import build_dataset, default_data_root, ensure_dataset
from kyam_lib.data import synthetic
from kyam_lib.data.synthetic import (GENERATOR_VERSIONS, REGION_S2_SIGNATURES, draw_regions_scene, generate_regions,
                                     generate_shapes, generator_version, regions_band_statistics, shape_classes)
from kyam_lib.data.transforms import S1_MEAN, S1_STD, S2_MEAN, S2_STD

SMALL_SHAPES = dict(num_train=24, num_val=8)
SMALL_REGIONS = dict(num_train=10, num_val=4, image_size=32)


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("gen") / "shapes", **SMALL_SHAPES)


@pytest.fixture(scope="module")
def regions_root(tmp_path_factory):
    return generate_regions(tmp_path_factory.mktemp("gen") / "regions", **SMALL_REGIONS)


def test_generators_are_deterministic(tmp_path, shapes_root, regions_root):
    assert tree_hash(generate_shapes(tmp_path / "a", **SMALL_SHAPES)) == tree_hash(shapes_root)
    assert tree_hash(generate_shapes(tmp_path / "b", seed=1, **SMALL_SHAPES)) != tree_hash(shapes_root)
    assert tree_hash(generate_regions(tmp_path / "c", **SMALL_REGIONS)) == tree_hash(regions_root)
    assert tree_hash(generate_regions(tmp_path / "d", seed=1, **SMALL_REGIONS)) != tree_hash(regions_root)


def test_class_is_shape_and_texture_together():
    classes, distractors = shape_classes(6)
    assert len(classes) == 6 and len(set(classes)) == 6 and not set(classes) & set(distractors)
    for shape in {c[0] for c in classes}:
        assert sum(c[0] == shape for c in classes) == 2  # a shape never names a class
    for shape, texture in classes:
        assert sum(c[1] == texture for c in classes) == 1  # a texture belongs to one class ...
        wearers = {d[0] for d in distractors if d[1] == texture}
        assert wearers == {c[0] for c in classes} - {shape}  # ... and to distractors of every other shape
    for n in range(2, 7):
        classes, distractors = shape_classes(n)
        assert len(set(classes)) == n and distractors and not set(classes) & set(distractors)
    for n in (1, 7):
        with pytest.raises(ValueError):
            shape_classes(n)


def test_shapes_layout_and_masks(shapes_root):
    assert "SYNTHETIC" in (shapes_root / "README.txt").read_text()
    assert generator_version(shapes_root) == GENERATOR_VERSIONS["shapes"]
    lines = (shapes_root / "labelmap.txt").read_text().splitlines()
    assert lines[1] == "background:0,0,0::" and len(lines) == 8
    ds = build_dataset("shapes", shapes_root, "train")
    assert len(ds) == 24 and len(build_dataset("shapes", shapes_root, "val")) == 8
    assert len(ds.class_names) == 6 and ds.has_background
    counts = []
    for index in range(len(ds)):
        image, mask = ds.read_raw(index)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert set(np.unique(mask).tolist()) <= set(range(7)) | {255}
        counts.append(int(ds.image_labels(index, mask).sum()))
        # The void band separates every object from everything else: two neighbouring
        # non-void pixels never carry different values.
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            assert not ((a != b) & (a != 255) & (b != 255)).any()
        assert (mask == 255).any()
    assert min(counts) >= 1 and max(counts) <= 3 and len(set(counts)) == 3


def test_regions_layout_and_labels(regions_root):
    assert "SYNTHETIC" in (regions_root / "README.txt").read_text()
    assert (regions_root / "test_observations.csv").read_text().splitlines()[0] == "Seasons.TESTSET,0,0"
    train = build_dataset("regions", regions_root, "train", use_s1=True)
    val = build_dataset("regions", regions_root, "val")
    assert len(train) == 10 and len(val) == 4 and train.num_channels == 15 and val.num_channels == 13
    for index in range(len(train)):
        mask = train.read_mask(index)
        valid = mask != 255
        assert valid.mean() > 0.5
        counts = np.bincount(mask[valid], minlength=8)
        assert np.array_equal(train.image_labels(index, mask), (counts >= 0.1 * valid.sum()).astype(np.float32))
        assert train[index]["image"].shape == (15, 32, 32)


def test_regions_classes_need_more_than_visible_bands():
    sig = REGION_S2_SIGNATURES
    # forest/wetland/water, shrubland/grassland, cropland/urban: one colour in B02-B04 ...
    for group in ((0, 3, 7), (1, 2), (4, 5)):
        assert np.allclose(sig[list(group), 1:4], sig[group[0], 1:4])
        # ... and at least 0.05 apart in reflectance somewhere in the other bands.
        others = [b for b in range(13) if b not in (1, 2, 3)]
        for i in group:
            for j in group:
                if i < j:
                    assert np.abs(sig[i, others] - sig[j, others]).max() >= 0.05


def test_band_constants_follow_the_generator():
    stats = regions_band_statistics()
    assert stats["s2_mean"] == S2_MEAN and stats["s2_std"] == S2_STD
    assert stats["s1_mean"] == S1_MEAN and stats["s1_std"] == S1_STD
    scenes = [draw_regions_scene(np.random.default_rng([7, i]), image_size=32) for i in range(60)]
    s2 = np.concatenate([s["s2"].reshape(13, -1) for s in scenes], axis=1) / 10000
    s1 = np.concatenate([s["s1"].reshape(2, -1) for s in scenes], axis=1)
    assert np.allclose(s2.mean(axis=1), S2_MEAN, rtol=0.1)
    assert np.allclose(s2.std(axis=1), S2_STD, rtol=0.2)
    assert np.allclose(s1.mean(axis=1), S1_MEAN, rtol=0.1)


def test_generate_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_shapes(tmp_path / "x", **SMALL_SHAPES)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.fixture
def small_generators(monkeypatch):
    calls = []

    def counted(fn, **kwargs):
        def run(root):
            calls.append(Path(root))
            return fn(root, **kwargs)
        return run

    monkeypatch.setitem(data._GENERATORS, "shapes", counted(generate_shapes, num_train=4, num_val=2))
    monkeypatch.setitem(data._GENERATORS, "regions", counted(generate_regions, num_train=2, num_val=2, image_size=32))
    return calls


def test_ensure_dataset_generates_once(tmp_path, small_generators):
    path = ensure_dataset("shapes", tmp_path)
    assert path == tmp_path / "shapes" and (path / "labelmap.txt").is_file()
    assert ensure_dataset("shapes", tmp_path) == path and ensure_dataset("shapes", path) == path
    assert len(small_generators) == 1
    ds = build_dataset("regions", tmp_path, "train")  # the data root: generated on first use
    assert ds.root == tmp_path / "regions" and len(small_generators) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regions", "shapes"]  # no temporary folders left


def test_ensure_dataset_replaces_an_old_generator_version(tmp_path, small_generators):
    path = ensure_dataset("shapes", tmp_path)
    readme = path / "README.txt"
    readme.write_text(readme.read_text().replace(f"generator version {GENERATOR_VERSIONS['shapes']}:",
                                                 "generator version 0:", 1))
    assert ensure_dataset("shapes", tmp_path) == path
    assert generator_version(path) == GENERATOR_VERSIONS["shapes"] and len(small_generators) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_killed_generation_leaves_no_half_set(tmp_path, monkeypatch, small_generators):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "draw_shapes_image", fail)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset("shapes", tmp_path)
    assert list(tmp_path.iterdir()) == []
    # A hard kill leaves the temporary folder behind; an old one is removed on the next call.
    partial = tmp_path / ".shapes.partial-abc"
    partial.mkdir()
    old = time.time() - 7200
    os.utime(partial, (old, old))
    monkeypatch.undo()
    monkeypatch.setitem(data._GENERATORS, "shapes", functools.partial(generate_shapes, num_train=2, num_val=1))
    ensure_dataset("shapes", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("KYAM_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("KYAM_DATA_ROOT")
    assert default_data_root() == Path(data.__file__).resolve().parents[2] / "data"


def test_water_context_co_occurs_with_class_0_and_is_background(monkeypatch):
    """VOC's boat-on-water failure mode: the water goes with class 0 but is background in the mask."""
    horizons = []
    real_water = synthetic._water

    def spy(rng, image, yy, xx):
        horizons.append(real_water(rng, image, yy, xx))
        return horizons[-1]

    monkeypatch.setattr(synthetic, "_water", spy)
    classes, distractors = shape_classes(6)
    with_class, without_class = [], []
    for i in range(300):
        before = len(horizons)
        image, mask = synthetic.draw_shapes_image(np.random.default_rng([7, i]), image_size=64, classes=classes,
                                                  distractors=distractors)
        has_water = len(horizons) > before
        (with_class if (mask == 1).any() else without_class).append(has_water)
        if has_water:
            rows = np.nonzero(mask == 1)[0]
            if rows.size:  # class 0 sits on the water: its centre is below the horizon
                assert np.median(rows) >= horizons[-1] - 4
            below = np.zeros_like(mask, dtype=bool)
            below[int(horizons[-1]) + 3:] = True
            water_pixels = below & (mask == 0)
            assert water_pixels.any() and set(np.unique(mask[below])) <= {0, 1, 2, 3, 4, 5, 6, 255}
    assert 0.7 < np.mean(with_class) < 0.9 and np.mean(without_class) < 0.15
