"""Label masks on disk: pseudo-masks written as palette PNGs, masks read back as label indices.

Beside `kyam_lib.io` rather than in it: the palette writer (`kyam_lib.data.palette`) writes
through `io.atomic_write`, so `io` cannot import it back.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from .data.palette import write_palette_png

__all__ = ["save_pseudo_mask", "load_mask_png"]


def save_pseudo_mask(mask: Tensor | np.ndarray, path: str | os.PathLike,
                     palette: Sequence[int] | np.ndarray | None = None) -> None:
    """Write an (H, W) label mask as an 8-bit palette PNG, atomically; palette None = VOC colours."""
    write_palette_png(path, mask, palette)


def load_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or grey) PNG mask as an (H, W) uint8 array of label indices."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected a palette or greyscale mask PNG, got mode {image.mode!r}")
        return np.array(image, dtype=np.uint8)
