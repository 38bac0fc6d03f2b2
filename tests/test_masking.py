"""Class-token masking: absent classes only, rate 0 identity, vectorised, generator-driven."""
import pytest
import torch

from kyam_lib.method.masking import mask_absent_class_tokens


def test_rate_zero_is_identity():
    x = torch.randn(4, 6, 8)
    assert mask_absent_class_tokens(x, torch.zeros(4, 6), 0.0) is x


def test_present_classes_are_never_masked():
    x = torch.randn(64, 6, 8)
    labels = (torch.rand(64, 6) < 0.5).float()
    out = mask_absent_class_tokens(x, labels, 1.0)
    present = labels.bool()
    assert torch.equal(out[present], x[present])
    assert (out[~present] == 0).all()  # rate 1: every absent class masked


def test_masking_rate_and_whole_token_zeroing():
    x = torch.randn(4000, 5, 3) + 10  # no accidental zeros
    out = mask_absent_class_tokens(x, torch.zeros(4000, 5), 0.5, generator=torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(-1)
    assert ((out == 0).any(-1) == zeroed).all()  # a token is zeroed whole or not at all
    assert abs(zeroed.float().mean().item() - 0.5) < 0.02


def test_generator_makes_it_reproducible_and_uniforms_are_exact():
    x, labels = torch.randn(8, 6, 4), torch.zeros(8, 6)
    a = mask_absent_class_tokens(x, labels, 0.5, generator=torch.Generator().manual_seed(3))
    b = mask_absent_class_tokens(x, labels, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    uniforms = torch.tensor([[0.1, 0.9, 0.49, 0.5, 0.0, 0.99]]).expand(8, 6)
    labels[:, 4] = 1  # present: never masked even though its draw is 0.0
    out = mask_absent_class_tokens(x, labels, 0.5, uniforms=uniforms)
    expected_masked = torch.tensor([True, False, True, False, False, False])
    assert torch.equal((out == 0).all(-1)[0], expected_masked)


def test_bad_shapes_and_rates():
    with pytest.raises(ValueError, match="disagree"):
        mask_absent_class_tokens(torch.randn(2, 3, 4), torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="outside"):
        mask_absent_class_tokens(torch.randn(2, 3, 4), torch.zeros(2, 3), 1.5)
