"""The training loop on CPU: the loss falls, the CLI writes a complete run, same seed → same metrics."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from kyam_lib.checkpoint import load_checkpoint
from kyam_lib.config import TrainConfig
from kyam_lib.train import build_datasets, evaluate_classifier, make_scheduler, train
from train_helpers import log_records, smoke_config

REPO = Path(__file__).resolve().parents[1]


def test_two_epochs_loss_falls_and_run_is_complete(data_root, tmp_path):
    cfg = smoke_config(data_root, tmp_path / "run", epochs=2, lr=2e-3)
    metrics = train(cfg, show_progress=False)
    out = tmp_path / "run"
    first, second = log_records(out)
    assert second["train_cls_loss"] < first["train_cls_loss"]
    assert second["val_loss"] < first["val_loss"]
    # Cosine schedule stepped per batch ends at min_lr_ratio * lr.
    assert second["lr"] == pytest.approx(cfg.min_lr_ratio * cfg.lr)
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert {k: metrics[k] for k in second} == second
    assert metrics["epochs"] == 2 and metrics["num_heads_total"] == 16 and metrics["world_size"] == 1
    assert TrainConfig.from_json(out / "config.json") == cfg
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002"]


def test_scheduler_warms_up_then_decays():
    cfg = TrainConfig(epochs=4, warmup_epochs=1.0, lr=1.0, min_lr_ratio=0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=2)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # warm-up 2 steps: 1/2, 2/2; then cosine over 6 steps from 1 down to 0.1 (reached after them)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 3 / 6)).item()))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


@pytest.mark.slow  # a subprocess: imports torch again
def test_cli_smoke_preset_writes_a_loadable_run(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KYAM_DATA_ROOT": str(data_root), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "kyam_lib.train", "--preset", "smoke", "--out", "out"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"config.json", "log.jsonl", "metrics.json", "checkpoints", "model"}
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = TrainConfig.from_json(out / "config.json")
    assert cfg.model_size == "tiny" and cfg.epochs == 2 and cfg.data_root == ""
    assert len(log_records(out)) == 2

    loaded = load_checkpoint(out / "model")
    assert loaded.train_config == cfg.to_dict()
    config_of_model = loaded.model_config
    assert (config_of_model.num_classes, config_of_model.in_channels, config_of_model.embed_dim,
            config_of_model.depth) == (6, 3, 64, 4)
    # The rebuilt model scores the validation subset exactly as the run reported.
    _, val_set = build_datasets(cfg.replace(data_root=str(data_root)))
    assert len(val_set) == 32
    scores = evaluate_classifier(loaded.model, DataLoader(val_set, batch_size=16), torch.device("cpu"), None)
    assert scores["val_classifier_acc"] == metrics["val_classifier_acc"]
    assert scores["val_loss"] == pytest.approx(metrics["val_loss"], abs=1e-6)


def test_same_config_and_seed_give_identical_metrics(data_root, tmp_path):
    runs = [train(smoke_config(data_root, tmp_path / name, seed=seed), show_progress=False)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert log_records(tmp_path / "a") == log_records(tmp_path / "b")
    a, b = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0] == runs[1]
    assert runs[2]["train_loss"] != runs[0]["train_loss"]  # the seed matters, so equality is not vacuous
