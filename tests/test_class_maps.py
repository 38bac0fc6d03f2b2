import pytest
import torch

from kyam_lib.method.class_maps import block_indices, class_maps


def _attention(batch: int = 1, num_classes: int = 1) -> torch.Tensor:
    """(B, 3 blocks, 2 heads, C, 4 patches) with value 100*block + 10*head + patch (+1000*b + 50*c)."""
    block = torch.arange(3).view(1, 3, 1, 1, 1) * 100.0
    head = torch.arange(2).view(1, 1, 2, 1, 1) * 10.0
    patch = torch.arange(4).view(1, 1, 1, 1, 4) * 1.0
    image = torch.arange(batch).view(batch, 1, 1, 1, 1) * 1000.0
    cls = torch.arange(num_classes).view(1, 1, 1, num_classes, 1) * 50.0
    return (block + head + patch + image + cls).double()


def _maps(attention, gates=None, **kwargs):
    # image_size == grid_size: bilinear resampling at scale 1 is the identity, so sums show through.
    return class_maps(attention, gates, grid_size=(2, 2), image_size=(2, 2), **kwargs)


def _expected(values):
    return torch.as_tensor(values, dtype=torch.float64).view(1, 1, 2, 2)


PATCH = torch.arange(4.0)


def test_all_blocks_mean_heads():
    # per block, mean over heads 0 and 1: 100*l + 5 + p; summed over l = 0, 1, 2: 315 + 3p
    torch.testing.assert_close(_maps(_attention(), blocks="all"), _expected(315 + 3 * PATCH))
    torch.testing.assert_close(_maps(_attention(), head_weighting="mean"), _expected(315 + 3 * PATCH))


def test_last_k_blocks():
    # blocks 1 and 2: (105 + p) + (205 + p)
    torch.testing.assert_close(_maps(_attention(), blocks=2), _expected(310 + 2 * PATCH))
    torch.testing.assert_close(_maps(_attention(), blocks=1), _expected(205 + PATCH))


def test_block_list():
    # blocks 0 and 2: (5 + p) + (205 + p); negative indices count from the end
    torch.testing.assert_close(_maps(_attention(), blocks=[0, 2]), _expected(210 + 2 * PATCH))
    torch.testing.assert_close(_maps(_attention(), blocks=(2, -3)), _expected(210 + 2 * PATCH))
    torch.testing.assert_close(_maps(_attention(), blocks=[1]), _expected(105 + PATCH))


def test_gate_weighting_excludes_closed_heads():
    gates = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    # block 0: head 0 alone (p); block 1: all closed, contributes 0; block 2: mean (205 + p)
    torch.testing.assert_close(_maps(_attention(), gates), _expected(205 + 2 * PATCH))
    # "mean" ignores the gates entirely
    torch.testing.assert_close(_maps(_attention(), gates, head_weighting="mean"), _expected(315 + 3 * PATCH))
    # only the fully closed block chosen: nothing survives
    torch.testing.assert_close(_maps(_attention(), gates, blocks=[1]), torch.zeros(1, 1, 2, 2, dtype=torch.float64))


def test_gates_all_open_equal_plain_mean():
    attention = torch.rand(2, 3, 4, 5, 6, dtype=torch.float64)
    gates = torch.ones(3, 4)
    kwargs = dict(grid_size=(2, 3), image_size=(5, 7))
    torch.testing.assert_close(class_maps(attention, gates, **kwargs), class_maps(attention, None, **kwargs))
    torch.testing.assert_close(class_maps(attention, gates, **kwargs),
                               class_maps(attention, gates, head_weighting="mean", **kwargs))


def test_single_head():
    # head 1 in every block: 100*l + 10 + p summed = 330 + 3p; gates do not matter
    gates = torch.zeros(3, 2)
    torch.testing.assert_close(_maps(_attention(), gates, head_weighting=1), _expected(330 + 3 * PATCH))
    torch.testing.assert_close(_maps(_attention(), head_weighting=-2), _expected(300 + 3 * PATCH))
    torch.testing.assert_close(_maps(_attention(), head_weighting=0, blocks=[2]), _expected(200 + PATCH))


def test_batch_and_classes_are_independent():
    attention = _attention(batch=2, num_classes=3)
    maps = _maps(attention, blocks=[0])
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(maps[b, c], (5 + PATCH + 1000 * b + 50 * c).double().view(2, 2))


def test_non_square_grid_layout_and_shapes():
    # patches are laid out row-major: patch p sits at row p // w, column p % w
    attention = torch.arange(6.0).view(1, 1, 1, 1, 6)
    maps = class_maps(attention, grid_size=(2, 3), image_size=(2, 3))
    torch.testing.assert_close(maps[0, 0], torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]))
    maps = class_maps(torch.rand(2, 4, 3, 5, 12), grid_size=(3, 4), image_size=(48, 64))
    assert maps.shape == (2, 5, 48, 64)
    maps = class_maps(torch.rand(1, 2, 2, 3, 8), grid_size=(4, 2), image_size=(30, 7))
    assert maps.shape == (1, 3, 30, 7)


def test_bilinear_upsampling_hand_computed():
    # align_corners=False, x2 along the width: [0, 4] -> [0, 0.75*0+0.25*4, 0.25*0+0.75*4, 4]
    attention = torch.tensor([0.0, 4.0]).view(1, 1, 1, 1, 2)
    maps = class_maps(attention, grid_size=(1, 2), image_size=(1, 4))
    torch.testing.assert_close(maps.flatten(), torch.tensor([0.0, 1.0, 3.0, 4.0]))
    # constant attention 0.5 in 2 blocks: mean over heads 0.5, summed 1.0, at any size
    flat = torch.full((1, 2, 2, 1, 6), 0.5)
    torch.testing.assert_close(class_maps(flat, grid_size=(2, 3), image_size=(9, 13)), torch.full((1, 1, 9, 13), 1.0))


def test_dtype_and_int_sizes():
    attention = torch.rand(1, 2, 2, 3, 16, dtype=torch.float64)
    maps = class_maps(attention, torch.ones(2, 2, dtype=torch.float32), grid_size=4, image_size=8)
    assert maps.dtype == torch.float64 and maps.shape == (1, 3, 8, 8)


def test_block_indices():
    assert block_indices("all", 4) == [0, 1, 2, 3]
    assert block_indices(3, 4) == [1, 2, 3]
    assert block_indices([3, -4], 4) == [0, 3]


@pytest.mark.parametrize("kwargs, match", [
    (dict(blocks=4), "1 <= k <= 3"),
    (dict(blocks=0), "1 <= k <= 3"),
    (dict(blocks=[0, 3]), "block index 3 out of range"),
    (dict(blocks=[-4]), "block index -4 out of range"),
    (dict(blocks=[1, -2]), "repeated"),
    (dict(blocks=[]), "non-empty"),
    (dict(blocks="last"), "expected 'all'"),
    (dict(head_weighting=2), "head index 2 out of range"),
    (dict(head_weighting="max"), "head_weighting"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _maps(_attention(), **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="head_gates: expected shape \\(3, 2\\)"):
        _maps(_attention(), torch.ones(2, 3))
    with pytest.raises(ValueError, match="gate values"):
        _maps(_attention(), torch.full((3, 2), -1.0))
    with pytest.raises(ValueError, match="P = 4"):
        class_maps(_attention(), grid_size=(2, 3), image_size=4)
    with pytest.raises(ValueError, match="class_attention"):
        class_maps(torch.rand(2, 3, 4, 5), grid_size=2, image_size=4)
    with pytest.raises(TypeError, match="floating-point"):
        class_maps(torch.ones(1, 1, 1, 1, 4, dtype=torch.long), grid_size=2, image_size=4)
