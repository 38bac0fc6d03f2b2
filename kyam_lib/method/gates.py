"""The head gates: hard-concrete `HeadGate` (or `AlwaysOpen`), the L0 penalty of Equation 1 and the sparsity rate."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import metrics

__all__ = ["HeadGate", "AlwaysOpen", "l0_penalty", "sparsity_rate"]


class HeadGate(nn.Module):
    """Hard-concrete gate per head (Louizos et al. 2018), hard 0/1 with a straight-through gradient.

    Training samples u ~ U(0,1) once per forward (shared by the batch); evaluation uses u = 1/2
    unless a `noise` is given (u = 1 holds every gate open, as during the L0 warm-up).
    """

    def __init__(self, num_heads: int, *, temperature: float = 0.33, stretch: tuple[float, float] = (-0.1, 1.1),
                 init_range: float = 0.59) -> None:
        super().__init__()
        self.temperature = temperature
        self.gamma, self.zeta = stretch
        self.log_alpha = nn.Parameter(torch.empty(num_heads).uniform_(-init_range, init_range))

    def soft_gate(self, noise: Tensor | None = None) -> Tensor:
        """(H,) stretched and clamped gate before hard thresholding; `noise` is u in (0, 1)."""
        logit = self.log_alpha if noise is None else self.log_alpha + torch.log(noise) - torch.log1p(-noise)
        gate = torch.sigmoid(logit / self.temperature) * (self.zeta - self.gamma) + self.gamma
        return gate.clamp(0.0, 1.0)

    def forward(self, noise: Tensor | None = None) -> Tensor:
        """(H,) gate values; `noise` (H,) replaces the training draw (one shared stream across ranks)."""
        if noise is None and self.training:
            noise = torch.rand_like(self.log_alpha)
        if noise is not None:
            eps = torch.finfo(self.log_alpha.dtype).eps
            noise = noise.to(self.log_alpha).clamp(eps, 1.0 - eps)
        soft = self.soft_gate(noise)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + (soft - soft.detach())  # exactly 0/1 forward, gradient of `soft` backward

    def open_probability(self) -> Tensor:
        """(H,) P(gate != 0), the differentiable L0 term."""
        return torch.sigmoid(self.log_alpha - self.temperature * math.log(-self.gamma / self.zeta))


class AlwaysOpen(nn.Module):
    """Stand-in for HeadGate in a model without gates: every head always open, no L0 term."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.register_buffer("ones", torch.ones(num_heads), persistent=False)

    def forward(self, noise: Tensor | None = None) -> Tensor:
        return self.ones

    def open_probability(self) -> Tensor:
        return self.ones.new_zeros(0)


def l0_penalty(model: nn.Module) -> Tensor:
    """Sum over gated heads of P(gate open); zero for a model without gates."""
    probabilities = model.gate_open_probabilities()
    if probabilities.numel() == 0:
        return probabilities.new_zeros(())
    return probabilities.sum()


@torch.no_grad()
def sparsity_rate(model: nn.Module) -> float:
    """Fraction of heads whose evaluation gate is 0 (the paper reports it in %)."""
    was_training = model.training
    model.eval()
    gates = model.head_gates()
    model.train(was_training)
    return metrics.sparsity_rate(gates)
