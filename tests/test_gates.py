"""The hard-concrete gate, the L0 penalty against hand-computed values, and the sparsity rate."""
import math

import pytest
import torch

from kyam_lib.config import ModelConfig
from kyam_lib.method.model import KyamViT
from kyam_lib.method.gates import HeadGate, l0_penalty, sparsity_rate


def model_with(log_alphas):
    model = KyamViT(ModelConfig(num_classes=2, image_size=(16, 16), embed_dim=24, depth=len(log_alphas),
                                num_heads=len(log_alphas[0])))
    with torch.no_grad():
        for block, values in zip(model.blocks, log_alphas):
            block.head_gate.log_alpha.copy_(torch.tensor(values))
    return model


def test_l0_penalty_hand_computed():
    model = model_with([[0.0, 1.0], [-1.0, 2.0]])
    shift = -0.33 * math.log(0.1 / 1.1)  # -beta * log(-gamma / zeta) = 0.7913
    expected = sum(1 / (1 + math.exp(-(a + shift))) for a in (0.0, 1.0, -1.0, 2.0))
    assert l0_penalty(model).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.6881 + 0.8571 + 0.4480 + 0.9424, abs=2e-4)


def test_l0_penalty_gradient_pushes_log_alpha_down():
    model = model_with([[0.0, 1.0]])
    l0_penalty(model).backward()
    assert (model.blocks[0].head_gate.log_alpha.grad > 0).all()


def test_sparsity_rate_counts_closed_evaluation_gates():
    model = model_with([[0.5, -0.5, -3.0], [1.0, 2.0, -0.1]]).train()
    assert sparsity_rate(model) == pytest.approx(3 / 6)
    assert model.training  # mode restored


def test_model_without_gates_has_zero_penalty_and_sparsity():
    model = KyamViT(ModelConfig(num_classes=2, image_size=(16, 16), embed_dim=16, depth=2, num_heads=2,
                                use_head_gates=False))
    assert l0_penalty(model).item() == 0.0
    assert sparsity_rate(model) == 0.0


def test_gate_evaluation_is_deterministic_and_hard():
    gate = HeadGate(4)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([2.0, -2.0, 0.1, -0.1]))
    gate.eval()
    # u = 1/2: soft = clamp(sigmoid(log_alpha / beta) * 1.2 - 0.1); open iff soft > 0.5 iff log_alpha > 0
    assert torch.equal(gate(), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert torch.equal(gate(), gate())


def test_gate_training_matches_hand_computed_values_and_passes_gradient():
    gate = HeadGate(3).train()
    with torch.no_grad():
        gate.log_alpha.fill_(0.3)
    noise = torch.tensor([0.7, 0.2, 0.45])
    values = gate(noise)
    assert torch.equal(values.detach(), torch.tensor([1.0, 0.0, 1.0]))
    values.sum().backward()
    # Head 3 is not clamped: d soft / d log_alpha = (zeta - gamma) * s (1 - s) / beta
    s = 1 / (1 + math.exp(-(0.3 + math.log(0.45 / 0.55)) / 0.33))
    expected = 1.2 * s * (1 - s) / 0.33
    assert gate.log_alpha.grad[2].item() == pytest.approx(expected, rel=1e-5)
    # Heads 1 and 2 are clamped to 1 and 0, so no gradient reaches them through the gate itself.
    assert gate.log_alpha.grad[:2].abs().sum().item() == 0.0


def test_gate_training_is_noisy_and_open_about_half_the_time_at_zero():
    torch.manual_seed(0)
    gate = HeadGate(1000).train()
    with torch.no_grad():
        gate.log_alpha.zero_()
    values = gate()
    assert set(values.detach().unique().tolist()) <= {0.0, 1.0}
    assert 0.4 < values.mean().item() < 0.6
