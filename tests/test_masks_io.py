"""Label masks on disk: palette PNG pseudo-masks written atomically and read back as label indices."""
import numpy as np
import pytest
import torch
from PIL import Image

from kyam_lib.masks_io import load_mask_png, save_pseudo_mask


def test_save_and_load_round_trip(tmp_path):
    mask = torch.randint(0, 21, (13, 17))
    mask[0, :5] = 255
    path = tmp_path / "run" / "masks" / "2007_000032.png"
    save_pseudo_mask(mask, path)
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == (17, 13)
        assert image.getpalette()[3:6] == [128, 0, 0]  # VOC aeroplane by default
    loaded = load_mask_png(path)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, mask.numpy())
    own = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)  # an (n, 3) palette
    save_pseudo_mask(mask.clamp(max=1), path, own)
    with Image.open(path) as image:
        assert image.getpalette()[:6] == [10, 20, 30, 40, 50, 60]
    assert np.array_equal(load_mask_png(path), mask.clamp(max=1).numpy())
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_save_and_load_errors(tmp_path):
    with pytest.raises(ValueError, match="0..255"):
        save_pseudo_mask(np.array([[0, 256]]), tmp_path / "a.png")
    with pytest.raises(TypeError, match="integer"):
        save_pseudo_mask(np.zeros((2, 2)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="\\(H, W\\)"):
        save_pseudo_mask(np.zeros((2, 2, 3), dtype=np.uint8), tmp_path / "a.png")
    with pytest.raises(ValueError, match="a.png: palette"):
        save_pseudo_mask(np.zeros((2, 2), dtype=np.uint8), tmp_path / "a.png", [0, 0])
    assert not (tmp_path / "a.png").exists()
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_mask_png(tmp_path / "missing.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png: expected a palette"):
        load_mask_png(tmp_path / "rgb.png")
