"""Class maps at each image's size: mixed-size batches, multi-scale and flip inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from kyam_lib.config import ModelConfig
from kyam_lib.data import build_dataset
from kyam_lib.inference import (EvalItems, collate_eval, grid_class_maps, maps_at_sizes, max_normalise, scaled_size,
                                size_groups)
from kyam_lib.method.model import KyamViT
from wsss_fixtures import VOC_ODD_ITEMS, write_voc_odd


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return KyamViT(ModelConfig(num_classes=4, image_size=(32, 32), patch_size=8, embed_dim=32, depth=2,
                               num_heads=4)).eval()


def test_eval_items_keep_original_masks_beside_resized_images(tmp_path):
    write_voc_odd(tmp_path)
    dataset = build_dataset("voc", tmp_path, "train", image_size=(32, 32))
    items = EvalItems(Subset(dataset, [2, 0, 1]), with_raw_image=True)
    batch = next(iter(DataLoader(items, batch_size=3, collate_fn=collate_eval)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["labels"].shape == (3, 20)
    assert batch["id"] == ["2009_000003", "2009_000001", "2009_000002"]
    sizes = [tuple(mask.shape) for mask in batch["mask"]]
    assert sizes == [VOC_ODD_ITEMS[i][:2] for i in batch["id"]] == [(375, 500), (375, 500), (500, 375)]
    assert [image.shape[:2] for image in batch["raw_image"]] == sizes and batch["raw_image"][0].dtype == np.uint8
    np.testing.assert_array_equal(batch["mask"][2].numpy(), dataset.read_mask(1))
    assert size_groups(sizes) == {(375, 500): [0, 1], (500, 375): [2]}


def test_maps_at_sizes_upsample_each_item_to_its_own_size():
    grid = [torch.rand(3, 2, 4, 4), torch.rand(3, 2, 4, 4)]
    sizes = [(6, 8), (8, 6), (6, 8)]
    maps = maps_at_sizes(grid, sizes)
    assert [tuple(m.shape) for m in maps] == [(2, 6, 8), (2, 8, 6), (2, 6, 8)]
    expected = sum(F.interpolate(g[1:2], size=(8, 6), mode="bilinear", align_corners=False) for g in grid)[0]
    torch.testing.assert_close(maps[1], expected)


def test_max_normalise_peaks_at_one_and_keeps_empty_maps_zero():
    maps = torch.stack([torch.arange(6.0).reshape(2, 3), torch.zeros(2, 3)])[None]
    normalised = max_normalise(maps)
    assert normalised[0, 0].max() == 1.0 and normalised[0, 0, 0, 1] == pytest.approx(0.2)
    assert normalised[0, 1].abs().sum() == 0


def test_scaled_sizes_are_patch_multiples():
    assert scaled_size((32, 32), 0.5, 8) == (16, 16)
    assert scaled_size((32, 48), 1.5, 8) == (48, 72)
    assert scaled_size((32, 32), 0.1, 8) == (8, 8)


def test_single_scale_is_the_plain_forward(model):
    images = torch.randn(2, 3, 32, 32)
    logits, maps = grid_class_maps(model, images)
    output = model(images, return_attention=True)
    torch.testing.assert_close(logits, output.logits)
    assert len(maps) == 1 and maps[0].shape == (2, 4, 4, 4)


def test_multi_scale_and_flip_shapes_and_logits(model):
    images = torch.randn(2, 3, 32, 32)
    logits, maps = grid_class_maps(model, images, scales=(0.5, 1.0, 1.5), flip=True)
    # one map per scale and one per mirrored pass, each at its own patch grid
    assert [tuple(m.shape) for m in maps] == [(2, 4, 2, 2)] * 2 + [(2, 4, 4, 4)] * 2 + [(2, 4, 6, 6)] * 2
    # the class decisions stay those of the unscaled image
    torch.testing.assert_close(logits, model(images).logits)
    summed = maps_at_sizes(maps, [(40, 56), (56, 40)])
    assert [tuple(m.shape) for m in summed] == [(4, 40, 56), (4, 56, 40)]
    with pytest.raises(ValueError, match="must contain 1.0"):
        grid_class_maps(model, images, scales=(0.5, 2.0))


@pytest.mark.parametrize("head_weighting", ["gates", "mean"])
def test_flip_inference_is_mirror_invariant(model, head_weighting):
    images = torch.randn(2, 3, 32, 32)
    _, maps = grid_class_maps(model, images, scales=(1.0, 1.5), flip=True, head_weighting=head_weighting)
    _, mirrored = grid_class_maps(model, images.flip(-1), scales=(1.0, 1.5), flip=True,
                                  head_weighting=head_weighting)
    sizes = [(37, 53), (37, 53)]
    ours, theirs = maps_at_sizes(maps, sizes), maps_at_sizes(mirrored, sizes)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b, a.flip(-1), rtol=1e-5, atol=1e-6)
    # without flip the maps are not mirror invariant (the test can fail)
    _, plain = grid_class_maps(model, images)
    _, plain_mirrored = grid_class_maps(model, images.flip(-1))
    assert not torch.allclose(plain_mirrored[0], plain[0].flip(-1), atol=1e-4)


def test_cam_classifier_maps_go_through_the_same_path():
    torch.manual_seed(0)
    cam = KyamViT(ModelConfig(num_classes=3, image_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=4,
                              classifier="cam", use_head_gates=False, use_reg_token=False)).eval()
    _, maps = grid_class_maps(cam, torch.randn(1, 3, 32, 32), scales=(1.0, 2.0), flip=True)
    assert [tuple(m.shape) for m in maps] == [(1, 3, 4, 4)] * 2 + [(1, 3, 8, 8)] * 2
    assert all((m >= 0).all() for m in maps)
