"""Configs: strict fields and types, JSON round trip, CLI overrides, the fields TrainConfig and SegConfig share."""
import dataclasses
import json

import pytest

from kyam_lib.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig, parse_overrides
from kyam_lib.segmentation import INHERITED_DATA_FIELDS, SegConfig


def test_unknown_field_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['l0_wieght'\]"):
        TrainConfig.from_dict({"l0_wieght": 0.1})
    path = tmp_path / "bad.json"
    path.write_text('{"maskrate": 0.5}')
    with pytest.raises(ConfigError, match="bad.json"):
        TrainConfig.from_json(path)


def test_wrong_types_name_the_field():
    with pytest.raises(ConfigError, match="TrainConfig.epochs: expected an integer"):
        TrainConfig(epochs="ten")
    with pytest.raises(ConfigError, match="TrainConfig.use_head_gates: expected true/false"):
        TrainConfig(use_head_gates="yes")
    with pytest.raises(ConfigError, match="model_size: 'huge' is not one of"):
        TrainConfig(model_size="huge")


def test_image_size_must_divide_by_patch():
    with pytest.raises(ConfigError, match="width 200 is not a positive multiple of patch_size 16"):
        ModelConfig(image_size=(208, 200), patch_size=16)
    assert ModelConfig(image_size=(208, 320), patch_size=16).grid_size == (13, 20)


def test_json_round_trip(tmp_path):
    config = TrainConfig(l0_weight=0.001, image_size=(32, 48), dataset="regions")
    config.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == config
    assert config.replace(seed=4).seed == 4


def test_overrides():
    assert parse_overrides(["--l0_weight", "0.1", "--image-size", "[32, 32]", "--dataset=voc", "--amp", "off"]) == {
        "l0_weight": 0.1, "image_size": [32, 32], "dataset": "voc", "amp": "off"}
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--seed"])


def test_train_and_segmentation_configs_share_the_run_fields(tmp_path):
    shared = [field.name for field in dataclasses.fields(RunConfig)]
    assert [field.name for field in dataclasses.fields(DataConfig)] == shared[:17]
    for cls in (TrainConfig, SegConfig):
        assert issubclass(cls, RunConfig) and cls.field_names()[:len(shared)] == shared
    own_defaults = {"epochs": (20, 30), "out_dir": ("runs/default", "runs/segmentation")}
    for name in shared:
        expected = own_defaults.get(name, (getattr(RunConfig(), name),) * 2)
        assert (getattr(TrainConfig(), name), getattr(SegConfig(), name)) == expected, name
    assert set(INHERITED_DATA_FIELDS) == set(shared[:17]) - {"max_train_images", "augment"}
    # Round trips, and a config.json written before the base (other key order) loads equal.
    for config in (TrainConfig(dataset="regions", dfc2020_use_s1=True, epochs=3, l0_weight=0.1),
                   SegConfig(masks="pseudo", voc_split_mode="official_random", epochs=4, decoder="linear")):
        config.to_json(tmp_path / "c.json")
        assert type(config).from_json(tmp_path / "c.json") == config
        values = config.to_dict()
        reordered = dict(sorted(values.items(), reverse=True))
        (tmp_path / "old.json").write_text(json.dumps(reordered))
        assert type(config).from_json(tmp_path / "old.json") == config
        assert type(config).from_dict({**values, "seed": 7}).to_dict() == {**values, "seed": 7}
