"""The PASCAL VOC colour map, for palette PNG masks and figures (255 = ignore is drawn white)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import atomic_write

__all__ = ["palette", "colorize", "write_palette_png"]


def palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 VOC colours: index bits 0/1/2 feed the red/green/blue bits from the top down.

    Entry 255 (ignore) is white rather than VOC's cream, so it stands out in figures.
    """
    index = np.arange(n)
    colours = np.zeros((n, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    if n > 255:
        colours[255] = 255
    return colours.astype(np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices → (H, W, 3) uint8 colours."""
    mask = np.asarray(mask)
    return palette(256)[np.clip(mask, 0, 255).astype(np.int64)]


def write_palette_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write (H, W) class indices 0..255 as a palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise ValueError(f"{path}: mask must be (H, W) with values in 0..255, got shape {mask.shape}")
    img = Image.fromarray(mask.astype(np.uint8))
    img.putpalette(palette(256).ravel().tolist())  # an "L" image becomes "P" here
    path = Path(path)
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
