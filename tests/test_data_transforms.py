"""Joint transforms, normalisation round trips, and the VOC palette."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from kyam_lib.data.palette import colorize, palette, write_palette_png
from kyam_lib.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, S2_MEAN, S2_STD, build_transform, denormalize,
                                      normalization)


def _halves(height=40, width=40):
    """Image channel 0 is 0 on the left half and 255 on the right; the mask is 1 / 2 likewise."""
    image = np.zeros((3, height, width), np.uint8)
    image[0, :, width // 2:] = 255
    mask = np.ones((height, width), np.int64)
    mask[:, width // 2:] = 2
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(mask))


def test_resize_is_nearest_for_masks():
    mask = np.arange(36).reshape(6, 6) % 5
    mask[0, 0] = 255
    transform = build_transform(image_size=(9, 4), augment=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    image_t, mask_t = transform(tv_tensors.Image(torch.zeros(3, 6, 6, dtype=torch.uint8)),
                                tv_tensors.Mask(torch.from_numpy(mask)))
    assert image_t.shape == (3, 9, 4) and mask_t.shape == (9, 4) and mask_t.dtype == torch.int64
    assert set(mask_t.unique().tolist()) <= set(np.unique(mask).tolist())


def test_augment_moves_image_and_mask_together():
    transform = build_transform(image_size=16, augment=True, mean=(0, 0, 0), std=(1, 1, 1))
    flipped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        image_t, mask_t = transform(*_halves())
        assert image_t.shape == (3, 16, 16) and mask_t.shape == (16, 16)
        red = image_t[0]
        # Image and mask disagree at most in the one column where resampling blends the halves.
        wrong = ((red > 0.5) & (mask_t == 1)) | ((red < 0.5) & (mask_t == 2))
        wrong_columns = wrong.any(dim=0).nonzero().flatten().tolist()
        edges = (mask_t[0, 1:] != mask_t[0, :-1]).nonzero().flatten().tolist()
        assert len(wrong_columns) <= 1 and all(c in (e, e + 1) for c in wrong_columns for e in edges)
        assert ((red < 0.05) & (mask_t == 2)).sum() == 0 and ((red > 0.95) & (mask_t == 1)).sum() == 0
        flipped += int(mask_t[:, 0].eq(2).all())
    assert 0 < flipped < 30


def test_normalisation_values_and_round_trip():
    image = torch.full((3, 4, 4), 128, dtype=torch.uint8)
    transform = build_transform(image_size=4, augment=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out, _ = transform(tv_tensors.Image(image), tv_tensors.Mask(torch.zeros(4, 4, dtype=torch.int64)))
    expected = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(out[:, 0, 0].numpy(), expected, atol=1e-6)
    assert np.allclose(denormalize(out), 128 / 255, atol=1e-6)


def test_denormalize_sentinel2_true_colour():
    reflectance = np.random.default_rng(0).uniform(0, 0.4, (13, 5, 6)).astype(np.float32)
    mean, std = normalization("s2")
    normalised = (reflectance - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    display = denormalize(torch.from_numpy(normalised))
    assert display.shape == (5, 6, 3)
    expected = np.clip(reflectance[[3, 2, 1]].transpose(1, 2, 0) / 0.3, 0, 1)
    assert np.allclose(display, expected, atol=1e-5)
    s1 = np.zeros((2, 5, 6), np.float32)
    assert denormalize(np.concatenate([normalised, s1])).shape == (5, 6, 3)  # 15 channels
    assert len(normalization("s2s1")[0]) == 15 and normalization("s2")[1] == S2_STD and S2_MEAN[3] > 0
    with pytest.raises(ValueError, match="no default normalisation for 4 channels"):
        denormalize(np.zeros((4, 2, 2)))


def test_voc_palette():
    colours = palette(256)
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [0, 0, 0] and colours[1].tolist() == [128, 0, 0]
    assert colours[2].tolist() == [0, 128, 0] and colours[3].tolist() == [128, 128, 0]
    assert colours[4].tolist() == [0, 0, 128] and colours[15].tolist() == [192, 128, 128]  # person
    assert colours[20].tolist() == [0, 64, 128]  # tvmonitor
    assert colours[255].tolist() == [255, 255, 255]
    assert np.array_equal(palette(21), colours[:21])
    assert colorize(np.array([[0, 255]])).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_palette_png_round_trip(tmp_path):
    mask = np.array([[0, 1, 2], [255, 20, 3]], np.uint8)
    path = tmp_path / "m.png"
    write_palette_png(path, mask)
    with Image.open(path) as img:
        assert img.mode == "P"
        assert np.array_equal(np.asarray(img), mask)
        assert img.getpalette()[3:6] == [128, 0, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    with pytest.raises(ValueError, match="values in 0..255"):
        write_palette_png(tmp_path / "bad.png", np.array([[300]]))
