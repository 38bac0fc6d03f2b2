"""Shared pieces of the training tests: the smoke config on a small generated shapes set."""
import json
from pathlib import Path

from kyam_lib.config import TrainConfig
from kyam_lib.presets import preset_overrides

# A small synthetic shapes set: seconds to generate, enough for 2-epoch runs of the tiny model.
SMOKE_SHAPES = dict(seed=0, num_train=96, num_val=32, image_size=32, num_classes=6)


def smoke_config(data_root: Path, out_dir: Path, **overrides) -> TrainConfig:
    values = {**TrainConfig().to_dict(), **preset_overrides("smoke"), "data_root": str(data_root),
              "out_dir": str(out_dir), "max_train_images": 0, "max_val_images": 0, "device": "cpu", **overrides}
    return TrainConfig.from_dict(values)


def log_records(out_dir: Path, *, drop_timing: bool = True) -> list[dict]:
    """The run's log.jsonl; timing (the only field allowed to differ between equal runs) dropped."""
    records = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    for record in records:
        seconds = record.pop("epoch_seconds") if drop_timing else record["epoch_seconds"]
        assert seconds >= 0
    return records
