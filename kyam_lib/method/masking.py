"""Random masking of absent-class [CLS] outputs (training only)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mask_absent_class_tokens"]


def mask_absent_class_tokens(class_outputs: Tensor, labels: Tensor, mask_rate: float, *,
                             generator: torch.Generator | None = None, uniforms: Tensor | None = None) -> Tensor:
    """Zero each absent class's token output with probability `mask_rate`, independently.

    class_outputs (B, C, D); labels (B, C), nonzero = present (present classes are never masked).
    `uniforms` (B, C) in [0, 1) may be given instead of drawing from `generator`.
    """
    if class_outputs.shape[:2] != labels.shape:
        raise ValueError(f"class outputs {tuple(class_outputs.shape)} and labels {tuple(labels.shape)} disagree")
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate {mask_rate} is outside [0, 1]")
    if mask_rate == 0.0:
        return class_outputs
    if uniforms is None:
        # Draw on the generator's device, so a CPU generator drives CUDA training reproducibly.
        gen_device = generator.device if generator is not None else labels.device
        uniforms = torch.rand(labels.shape, generator=generator, device=gen_device)
    drop = (labels.to(uniforms.device) == 0) & (uniforms < mask_rate)
    keep = (~drop).to(device=class_outputs.device, dtype=class_outputs.dtype)
    return class_outputs * keep.unsqueeze(-1)
