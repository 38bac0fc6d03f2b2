"""Joint image/mask transforms and every normalisation constant of kyam, in one place.

Images and masks go through torchvision.transforms.v2 together as tv_tensors.Image and
tv_tensors.Mask, so a crop or flip is the same for both and masks are resized with nearest.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "S2_BANDS",
    "S2_RGB_BANDS",
    "S2_SCALE",
    "S2_MEAN",
    "S2_STD",
    "S1_BANDS",
    "S1_CLIP_DB",
    "S1_MEAN",
    "S1_STD",
    "normalization",
    "build_transform",
    "denormalize",
    "s2_true_colour",
]

# RGB photographs: the ImageNet statistics (the convention of timm's pretrained ViTs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Sentinel-2 L1C: 13 bands stored as uint16 DN = reflectance x 10000; loaders divide by
# S2_SCALE (after clipping to [0, S2_SCALE]) and standardise with these reflectance constants.
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S2_RGB_BANDS = (3, 2, 1)  # B04, B03, B02: red, green, blue
S2_SCALE = 10000.0
# The per-band mean and std implied by the `regions` generator's spectral library (a typical
# land-cover mix at uniform class prior): kyam_lib.data.synthetic.regions_band_statistics()
# computes them and a test keeps the two equal. On real DFC2020 scenes they are of the right
# order; pass `mean=`/`std=` to the loader to use statistics measured on your data instead.
S2_MEAN = (0.1212, 0.102, 0.0977, 0.093, 0.1178, 0.1695, 0.1963, 0.208, 0.2193, 0.0743, 0.0039, 0.1857, 0.1278)
S2_STD = (0.0258, 0.0264, 0.0342, 0.0499, 0.0524, 0.0705, 0.0857, 0.0945, 0.1015, 0.0298, 0.0011, 0.1022, 0.0808)

# Sentinel-1 GRD backscatter in dB (VV, VH), clipped to S1_CLIP_DB before standardising;
# constants from the same generator definition (class means, per-scene gain, 4-look speckle).
S1_BANDS = ("VV", "VH")
S1_CLIP_DB = (-25.0, 0.0)
S1_MEAN = (-11.0654, -17.9404)
S1_STD = (5.1578, 5.508)

# Reflectance shown as white in Sentinel-2 true-colour figures (typical scenes are dark).
_S2_DISPLAY_WHITE = 0.3


def normalization(kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for "rgb", "s2" (13 channels) or "s2s1" (15 channels: S2 then S1)."""
    if kind == "rgb":
        return IMAGENET_MEAN, IMAGENET_STD
    if kind == "s2":
        return S2_MEAN, S2_STD
    if kind == "s2s1":
        return S2_MEAN + S1_MEAN, S2_STD + S1_STD
    raise ValueError(f"unknown normalisation {kind!r}; expected 'rgb', 's2' or 's2s1'")


def build_transform(*, image_size: int | tuple[int, int], augment: bool,
                    mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Joint transform of (tv_tensors.Image (C, H, W) uint8 or float, tv_tensors.Mask (H, W)).

    augment=True: RandomResizedCrop(image_size, scale=(0.5, 1)) and a horizontal flip;
    augment=False: Resize to image_size. Then float32 in [0, 1] (uint8 input) and Normalize.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if augment:
        geometry = [v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(size, antialias=True)]
    return v2.Compose([
        *geometry,
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


def denormalize(image: torch.Tensor | np.ndarray, *, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, rgb_channels: Sequence[int] | None = None) -> np.ndarray:
    """A normalised (C, H, W) image → (H, W, 3) float in [0, 1] for display.

    The constants follow from C when not given: 3 = ImageNet RGB; 13 or 15 = Sentinel-2
    (+ Sentinel-1), shown as bands B04, B03, B02 with reflectance 0.3 as white.
    """
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if array.ndim != 3:
        raise ValueError(f"expected one (C, H, W) image, got shape {array.shape}")
    channels = array.shape[0]
    multispectral = channels in (13, 15)
    if mean is None or std is None:
        if channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif multispectral:
            mean, std = normalization("s2" if channels == 13 else "s2s1")
        else:
            raise ValueError(f"no default normalisation for {channels} channels; pass mean= and std=")
    if rgb_channels is None:
        rgb_channels = S2_RGB_BANDS if multispectral else (0, 1, 2)
    rgb_channels = list(rgb_channels)
    values = array[rgb_channels] * np.asarray(std, np.float32)[rgb_channels, None, None] \
        + np.asarray(mean, np.float32)[rgb_channels, None, None]
    if multispectral:
        values = values / _S2_DISPLAY_WHITE
    return np.clip(values.transpose(1, 2, 0), 0.0, 1.0)


def s2_true_colour(reflectance: np.ndarray) -> np.ndarray:
    """(H, W, C >= 4) Sentinel-2 reflectance → (H, W, 3) float in [0, 1] (B04, B03, B02)."""
    rgb = np.asarray(reflectance, np.float32)[..., list(S2_RGB_BANDS)] / _S2_DISPLAY_WHITE
    return np.clip(rgb, 0.0, 1.0)
