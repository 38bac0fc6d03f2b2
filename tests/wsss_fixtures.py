"""A VOC-layout tree of odd-sized images (500×375 and 375×500, as in VOC 2012) and a tiny run on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_fixtures import write_jpeg, write_png
from kyam_lib.config import TrainConfig
from kyam_lib.train import train

# id: (height, width, [(class, top, left, bottom, right), ...]) — VOC indices, 0 background, 255 void
VOC_ODD_ITEMS = {
    "2009_000001": (375, 500, [(15, 40, 60, 300, 260)]),
    "2009_000002": (500, 375, [(12, 100, 20, 420, 200), (15, 30, 250, 200, 360)]),
    "2009_000003": (375, 500, [(1, 150, 200, 330, 480)]),
    "2009_000004": (500, 375, [(12, 200, 100, 480, 300)]),
    "2009_000005": (375, 500, [(15, 20, 20, 200, 200), (1, 220, 250, 360, 490)]),
}
VOC_ODD_SPLITS = {"train": ["2009_000001", "2009_000002", "2009_000003"], "val": ["2009_000004", "2009_000005"]}
_COLOURS = {1: (200, 40, 40), 12: (40, 200, 40), 15: (40, 40, 200)}


def write_voc_odd(root: Path, *, seed: int = 0) -> dict:
    """JPEGImages, SegmentationClass (palette PNGs with a 255 outline round every object) and split files."""
    rng = np.random.default_rng(seed)
    masks, images = {}, {}
    for image_id, (height, width, boxes) in VOC_ODD_ITEMS.items():
        mask = np.zeros((height, width), np.uint8)
        image = rng.integers(90, 150, (height, width, 3)).astype(np.uint8)
        for cls, top, left, bottom, right in boxes:
            mask[top - 3:bottom + 3, left - 3:right + 3] = 255
            mask[top:bottom, left:right] = cls
            image[top:bottom, left:right] = np.clip(
                np.array(_COLOURS[cls]) + rng.integers(-20, 20, (bottom - top, right - left, 3)), 0, 255)
        masks[image_id], images[image_id] = mask, image
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", image)
        write_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for split, ids in VOC_ODD_SPLITS.items():
        (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return {"masks": masks, "images": images, "splits": VOC_ODD_SPLITS}


def train_tiny_voc_run(data_root: Path, out_dir: Path) -> Path:
    """One CPU epoch of a tiny model at 32 px on the odd-sized VOC tree."""
    cfg = TrainConfig(dataset="voc", data_root=str(data_root), model_size="tiny", image_size=(32, 32), patch_size=8,
                      epochs=1, batch_size=2, warmup_epochs=0.0, augment=False, out_dir=str(out_dir), device="cpu")
    train(cfg, show_progress=False)
    return out_dir
