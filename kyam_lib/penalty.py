"""The L0 penalty of Equation 1 and the sparsity rate of the head gates."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import metrics

__all__ = ["l0_penalty", "sparsity_rate"]


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
