"""Initialising from a timm ViT checkpoint file written by the test (no hub needed)."""
import pytest
import timm
import torch
from safetensors.torch import save_file

from kyam_lib.config import ModelConfig
from kyam_lib.method.model import KyamViT
from kyam_lib.pretrained import init_from_timm, load_timm_state_dict


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, embed_dim=32, depth=2,
                               num_heads=4, img_size=64, patch_size=16)
    path = tmp_path_factory.mktemp("weights") / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return path, source.state_dict()


def test_class_and_reg_tokens_replicate_the_pretrained_cls(timm_file):
    path, source = timm_file
    model = KyamViT(ModelConfig(num_classes=5, image_size=(64, 64), patch_size=16, embed_dim=32, depth=2,
                                num_heads=4))
    left = init_from_timm(model, str(path))
    assert left == ["blocks.0.head_gate.log_alpha", "blocks.1.head_gate.log_alpha", "head.bias", "head.weight"]
    for c in range(5):
        assert torch.equal(model.class_tokens[0, c], source["cls_token"][0, 0])
        assert torch.equal(model.class_pos_embed[0, c], source["pos_embed"][0, 0])
    assert torch.equal(model.reg_token[0, 0], source["cls_token"][0, 0])
    assert torch.equal(model.reg_pos_embed[0, 0], source["pos_embed"][0, 0])
    assert torch.equal(model.patch_pos_embed, source["pos_embed"][:, 1:])  # same grid: copied as is
    assert torch.equal(model.blocks[1].attn.qkv.weight, source["blocks.1.attn.qkv.weight"])


def test_other_grid_channels_and_patch_size_are_adapted(timm_file):
    path, source = timm_file
    model = KyamViT(ModelConfig(num_classes=3, image_size=(32, 64), patch_size=8, in_channels=13, embed_dim=32,
                                depth=2, num_heads=4))
    init_from_timm(model, load_timm_state_dict(str(path)))
    assert model.patch_pos_embed.shape == (1, 4 * 8, 32)
    weight = model.patch_embed.proj.weight
    assert weight.shape == (32, 13, 8, 8)
    # channels are the pretrained RGB filters repeated and scaled by 3/13
    torch.testing.assert_close(weight[:, 3], weight[:, 0])
    torch.testing.assert_close(weight[:, 4], weight[:, 1])
    out = model.eval()(torch.randn(1, 13, 32, 64), return_attention=True)
    assert out.class_attention.shape == (1, 2, 4, 3, 32)


def test_bad_sources(tmp_path, timm_file):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_timm_state_dict(str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pth: not a readable weight file"):
        load_timm_state_dict(str(bad))
    with pytest.raises(ValueError, match="neither a local file nor a timm model"):
        load_timm_state_dict("no_such_model_name")
    path, _ = timm_file
    wide = KyamViT(ModelConfig(num_classes=2, image_size=(64, 64), patch_size=16, embed_dim=64, depth=2, num_heads=4))
    with pytest.raises(ValueError, match="width 32 differs"):
        init_from_timm(wide, str(path))


def test_twelve_head_timm_weights_into_a_sixteen_head_model_fail_before_any_download():
    # vit_base_patch16_224.augreg_in21k is not cached here and there is no hub: the error must come first.
    model = KyamViT(ModelConfig(num_classes=2, image_size=(32, 32), patch_size=16, embed_dim=768, depth=12,
                                num_heads=16))
    with pytest.raises(ValueError, match=r"has num_heads 12 \(the model has 16\).*num_heads=12"):
        init_from_timm(model, "vit_base_patch16_224.augreg_in21k")


def test_local_file_of_a_named_timm_model(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # 192 wide, 12 blocks, 3 heads
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = KyamViT(ModelConfig(num_classes=2, image_size=(32, 32), patch_size=16, embed_dim=192, depth=12,
                                num_heads=3))
    init_from_timm(model, "vit_tiny_patch16_224", file=str(path))
    assert torch.equal(model.blocks[11].attn.qkv.weight, source.blocks[11].attn.qkv.weight)
    four_heads = KyamViT(ModelConfig(num_classes=2, image_size=(32, 32), patch_size=16, embed_dim=192, depth=12,
                                     num_heads=4))
    with pytest.raises(ValueError, match=r"'vit_tiny_patch16_224' has num_heads 3 \(the model has 4\)"):
        init_from_timm(four_heads, "vit_tiny_patch16_224", file=str(path))
    with pytest.raises(FileNotFoundError, match="missing.safetensors.*vit_tiny_patch16_224"):
        init_from_timm(model, "vit_tiny_patch16_224", file=str(tmp_path / "missing.safetensors"))
