"""Dense CRF post-processing of pseudo-masks (Krähenbühl & Koltun 2011), through pydensecrf2.

Optional: `pip install -e ".[crf]"`. pydensecrf2 is imported on first use, so the rest of kyam
never needs it. Defaults are the settings of DeepLab's CRF as the WSSS tool chain uses them
(e.g. CLIP-ES): 10 mean-field iterations, a smoothness kernel (w 3, σ_xy 1) and an appearance
kernel (w 4, σ_xy 67, σ_rgb 3).
"""
from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import torch
from torch import Tensor

__all__ = ["CRFParams", "crf_available", "dense_crf", "crf_masks"]


@dataclasses.dataclass(frozen=True)
class CRFParams:
    iterations: int = 10
    pos_w: float = 3.0          # smoothness kernel weight
    pos_xy_std: float = 1.0     # its spatial std (pixels)
    bi_w: float = 4.0           # appearance kernel weight
    bi_xy_std: float = 67.0     # its spatial std (pixels)
    bi_rgb_std: float = 3.0     # its colour std (0..255)


def crf_available() -> bool:
    try:
        importlib.import_module("pydensecrf.densecrf")
    except ImportError:
        return False
    return True


def _densecrf():
    try:
        return importlib.import_module("pydensecrf.densecrf")
    except ImportError as err:
        raise ImportError('the dense CRF needs pydensecrf2: pip install -e ".[crf]"') from err


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Mean-field inference: image (H, W, 3) uint8, probs (K, H, W) per-pixel class probabilities.

    Returns the refined (K, H, W) float32 marginals; unary = −log p (p clipped at 1e-8).
    """
    image = np.asarray(image)
    probs = np.asarray(probs, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs: expected (K, {image.shape[0]}, {image.shape[1]}), got {probs.shape}")
    num_labels, height, width = probs.shape
    densecrf = _densecrf()
    model = densecrf.DenseCRF2D(width, height, num_labels)
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(num_labels, -1)
    model.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    model.addPairwiseGaussian(sxy=params.pos_xy_std, compat=params.pos_w)
    # pydensecrf needs a writable buffer; dataset images may be read-only views.
    rgb = np.require(image, requirements=("C", "W"))
    model.addPairwiseBilateral(sxy=params.bi_xy_std, srgb=params.bi_rgb_std, rgbim=rgb, compat=params.bi_w)
    marginals = model.inference(params.iterations)
    return np.asarray(marginals, dtype=np.float32).reshape(num_labels, height, width)


def crf_masks(image: np.ndarray, scores: Tensor, params: CRFParams = CRFParams()) -> Tensor:
    """Refine one image's labelling: scores (K, H, W), −inf for labels that may not occur.

    The finite scores of each pixel (e.g. the background score t and the normalised maps of the
    selected classes) are turned into probabilities by dividing by their sum; the CRF runs over
    the allowed labels only. Returns (H, W) int64 label indices into the K rows of `scores`.
    """
    allowed = torch.isfinite(scores).flatten(1).all(dim=1).nonzero().flatten()
    if len(allowed) == 0:
        raise ValueError("scores: no label is allowed (every row is -inf)")
    kept = scores.index_select(0, allowed).float().clamp_min(0.0).cpu().numpy()
    probs = (kept + 1e-5) / (kept + 1e-5).sum(axis=0, keepdims=True)
    refined = dense_crf(image, probs, params).argmax(axis=0)
    return allowed.cpu()[torch.from_numpy(refined)].to(scores.device)
