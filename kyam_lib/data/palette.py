"""The PASCAL VOC colour map, for palette PNG masks and figures (255 = ignore is drawn white)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import atomic_write

__all__ = ["palette", "colorize", "flat_colours", "palette_png_bytes", "write_palette_png"]


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


def flat_colours(colours=None, *, path: str = "palette") -> list[int]:
    """Flat [r, g, b, ...] ints from a flat list or an (n, 3) array; None = the VOC colour map."""
    flat = np.asarray(palette(256) if colours is None else colours).reshape(-1)
    if flat.size % 3 or flat.size > 768 or (flat.size and (flat.min() < 0 or flat.max() > 255)):
        raise ValueError(f"{path}: palette must hold at most 256 RGB triples with values 0..255, got {flat.size} values")
    return flat.astype(np.int64).tolist()


def palette_png_bytes(mask: np.ndarray, colours=None, *, path: str = "mask") -> bytes:
    """(H, W) integer class indices 0..255 → 8-bit palette PNG bytes; `colours` flat or (n, 3), None = VOC."""
    mask = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: mask must be (H, W), got shape {mask.shape}")
    if mask.dtype.kind not in "iu":
        raise TypeError(f"{path}: mask must hold integer labels, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"{path}: mask must be (H, W) with values in 0..255, got {mask.min()}..{mask.max()}")
    img = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    img.putpalette(flat_colours(colours, path=path))  # an "L" image becomes "P" here
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_palette_png(path: str | os.PathLike, mask: np.ndarray, colours=None) -> None:
    """Write (H, W) class indices 0..255 as a palette PNG, atomically."""
    data = palette_png_bytes(mask, colours, path=str(path))
    with atomic_write(Path(path)) as tmp:
        tmp.write_bytes(data)
