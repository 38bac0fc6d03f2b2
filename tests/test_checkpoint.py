"""Checkpoints: bit-identical round trip, self-describing, atomic, never unpickling, clear errors."""
import json

import pytest
import torch

from kyam_lib.checkpoint import (CheckpointError, check_compatible, latest_checkpoint, load_checkpoint,
                                 load_training_state, save_checkpoint)
from kyam_lib.config import ModelConfig
from kyam_lib.method.model import KyamViT


def small_model(**kw):
    torch.manual_seed(0)
    return KyamViT(ModelConfig(num_classes=4, image_size=(32, 32), embed_dim=32, depth=2, num_heads=4, **kw))


def test_round_trip_is_bit_identical(tmp_path):
    model = small_model(in_channels=13).eval()
    save_checkpoint(tmp_path / "ckpt", model, train_config={"seed": 3})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.model_config == model.config
    assert loaded.train_config == {"seed": 3}
    x = torch.randn(2, 13, 32, 32)
    a, b = model(x, return_attention=True), loaded.model.eval()(x, return_attention=True)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.class_attention, b.class_attention)
    # the weights file alone describes the model
    assert load_checkpoint(tmp_path / "ckpt" / "model.safetensors").model_config == model.config


def test_training_state_round_trip_and_no_temp_left(tmp_path):
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.95))
    model(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "epoch": 7, "rng": torch.get_rng_state(), "pair": (1, 2.5)}
    save_checkpoint(tmp_path / "checkpoints" / "epoch_0007", model, training_state=state)
    save_checkpoint(tmp_path / "checkpoints" / "epoch_0007", model, training_state=state)  # overwrite
    restored = load_training_state(tmp_path / "checkpoints" / "epoch_0007")
    assert restored["epoch"] == 7 and restored["pair"] == (1, 2.5)
    assert torch.equal(restored["rng"], state["rng"])
    fresh = torch.optim.AdamW(small_model().parameters(), lr=0.1)
    fresh.load_state_dict(restored["optimizer"])
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][key], value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0007"]
    assert latest_checkpoint(tmp_path).name == "epoch_0007"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")
    bogus = tmp_path / "bogus" / "model.safetensors"
    bogus.parent.mkdir()
    bogus.write_bytes(b"\x80\x04this is a pickle, not safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(bogus)
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a kyam checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_compatibility_errors_name_the_value():
    config = small_model().config
    check_compatible(config, num_classes=4, num_channels=3)
    with pytest.raises(CheckpointError, match="4 classes, the data has 20"):
        check_compatible(config, num_classes=20, num_channels=3)
    with pytest.raises(CheckpointError, match="3 input channels, the data has 13"):
        check_compatible(config, num_classes=4, num_channels=13)


def test_config_json_is_readable(tmp_path):
    save_checkpoint(tmp_path / "c", small_model(), train_config=None)
    stored = json.loads((tmp_path / "c" / "config.json").read_text())
    assert stored["model"]["num_classes"] == 4 and stored["model"]["image_size"] == [32, 32]
