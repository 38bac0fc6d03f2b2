"""The training loop on CPU: the loss falls, the CLI writes a complete run, same seed → same metrics; one train_step."""
import contextlib
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
from kyam_lib.config import ConfigError, TrainConfig
from kyam_lib.method.model import KyamViT
from benchmarks import bench
from kyam_lib import train as train_module
from kyam_lib.segmentation import SegConfig, train_segmentation
from kyam_lib.segmentation import training as seg_training
from kyam_lib.train import (build_datasets, classifier_loss, evaluate_classifier, l0_weight_at, make_optimizer,
                             make_scheduler, model_config_for, train)
from train_helpers import log_records, smoke_config

REPO = Path(__file__).resolve().parents[1]


def test_two_epochs_loss_falls_and_run_is_complete(data_root, tmp_path):
    cfg = smoke_config(data_root, tmp_path / "run", epochs=2, lr=1e-3, mask_rate=0.0)  # masking shifts val calibration
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


def test_gate_warmup_freezes_gates_then_ramps_gate_lr_and_lambda_in():
    cfg = TrainConfig(epochs=4, warmup_epochs=0.0, lr=1.0, gate_lr_ratio=0.5, l0_weight=0.01,
                      l0_warmup_epochs=1.5, gate_ramp_epochs=1.0)
    assert [l0_weight_at(cfg, e) for e in (0.0, 1.49, 1.5, 2.0, 2.5, 3.0)] == pytest.approx(
        [0.0, 0.0, 0.0, 0.005, 0.01, 0.01])
    assert l0_weight_at(TrainConfig(l0_weight=0.01, l0_warmup_epochs=0.0), 0.0) == 0.01  # the paper: from the start
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": params[:1], "lr": cfg.lr, "name": "decay"},
                                 {"params": params[1:], "lr": cfg.lr * cfg.gate_lr_ratio, "name": "gates"}], lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=2)
    gate_lrs, other_lrs = [], []
    for _ in range(8):
        other_lrs.append(optimizer.param_groups[0]["lr"])
        gate_lrs.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    # 1.5 warm-up epochs = the first 3 steps: gate lr 0; then a 1-epoch (2-step) linear ramp
    # (step 3 = 1.5 epochs: 0, step 4 = 2.0 epochs: 1/2) to ratio x the shared cosine schedule
    assert gate_lrs[:4] == [0.0, 0.0, 0.0, 0.0]
    assert gate_lrs[4] == pytest.approx(0.5 * 0.5 * other_lrs[4])
    assert gate_lrs[5:] == pytest.approx([0.5 * lr for lr in other_lrs[5:]])
    assert all(lr > 0 for lr in other_lrs)


def test_make_optimizer_ties_the_gate_lr_to_the_weight_lr():
    cfg = TrainConfig(model_size="tiny", lr=2e-3, gate_lr_ratio=5.0)
    model = KyamViT(model_config_for(cfg, num_classes=3, in_channels=3, multi_label=True))
    lrs = {group["name"]: group["lr"] for group in make_optimizer(model, cfg).param_groups}
    assert lrs == {"decay": 2e-3, "no_decay": 2e-3, "gates": pytest.approx(1e-2)}


def test_warmup_epochs_log_the_network_with_every_gate_open(data_root, tmp_path):
    cfg = smoke_config(data_root, tmp_path / "w", epochs=2, use_head_gates=True, l0_warmup_epochs=1.5)
    train(cfg, show_progress=False)
    first, second = log_records(tmp_path / "w")
    assert first["gates_held_open"] is True and first["sparsity"] == 0.0
    assert second["gates_held_open"] is False
    model = load_checkpoint(tmp_path / "w" / "checkpoints" / "epoch_0001").model.eval()
    dataset = build_datasets(cfg)[1]
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    labels = torch.stack([dataset[i]["labels"] for i in range(len(dataset))])
    with torch.no_grad():
        held_open = model(images, gate_noise=torch.ones(4, 4))
        evaluation_gates = model(images)
    assert held_open.head_gates.min() == 1.0 and evaluation_gates.head_gates.min() == 0.0
    assert first["val_loss"] == pytest.approx(float(model.loss(held_open, labels)), rel=1e-5)


def test_gates_stay_open_and_untrained_during_the_warmup(data_root, tmp_path):
    def run(name: str, **overrides):
        cfg = smoke_config(data_root, tmp_path / name, epochs=1, use_head_gates=True, **overrides)
        train(cfg, show_progress=False)
        return load_checkpoint(tmp_path / name / "model").model.state_dict()

    # Within the warm-up, gate lr and lambda do not matter: gates open, untrained, no penalty.
    a = run("a", l0_weight=0.1, gate_lr_ratio=50.0, l0_warmup_epochs=1.0)
    b = run("b", l0_weight=1.0, gate_lr_ratio=500.0, l0_warmup_epochs=1.0)
    c = run("c", l0_weight=0.1, gate_lr_ratio=50.0, l0_warmup_epochs=0.0)
    alphas = sorted(k for k in a if k.endswith("log_alpha"))
    assert alphas and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in alphas)  # without the warm-up the gates train at once


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


def test_cached_items_train_the_same_weights(data_root, tmp_path):
    runs = {}
    for cache in (False, True):
        cfg = smoke_config(data_root, tmp_path / str(cache), epochs=2, augment=False, cache_items=cache)
        train(cfg, show_progress=False)
        runs[cache] = load_checkpoint(tmp_path / str(cache) / "model").model.state_dict()
    assert all(torch.equal(runs[False][k], runs[True][k]) for k in runs[False])
    with pytest.raises(ConfigError, match="cache_items needs augment=false"):
        smoke_config(data_root, tmp_path / "x", augment=True, cache_items=True)


def test_the_loop_the_segmentation_and_the_benchmark_step_through_one_train_step(data_root, tmp_path, monkeypatch):
    assert bench.train_step is train_module.train_step and seg_training.train_step is train_module.train_step
    stepped, real_step = [], train_module.train_step

    def counting_step(model, *args, **kwargs):
        stepped.append(type(model).__name__)
        return real_step(model, *args, **kwargs)

    for module in (train_module, seg_training, bench):
        monkeypatch.setattr(module, "train_step", counting_step)
    train(smoke_config(data_root, tmp_path / "run", epochs=1, max_train_images=32), show_progress=False)
    assert stepped == ["KyamViT"] * 2  # 32 images, batch 16
    train_segmentation(SegConfig(data_root=str(data_root), image_size=(32, 32), model_size="tiny", epochs=1,
                                 batch_size=8, max_train_images=16, max_val_images=8, device="cpu",
                                 out_dir=str(tmp_path / "seg")), show_progress=False)
    assert stepped[2:] == ["SegmentationViT"] * 2
    case = bench.SMOKE.small
    bench.compare_train_steps(case)
    assert stepped[4:] == ["KyamViT"] * (case.warmup + case.repeats)  # the plain ViT is the reference, not stepped


def test_classifier_loss_holds_the_gates_open_and_lambda_at_zero_during_the_warm_up():
    cfg = TrainConfig(model_size="tiny", image_size=(32, 32), l0_warmup_epochs=1.0, gate_ramp_epochs=2.0, l0_weight=0.5)
    torch.manual_seed(0)
    model = KyamViT(model_config_for(cfg, num_classes=4, in_channels=3, multi_label=True)).train()
    batch = {"image": torch.randn(2, 3, 32, 32), "labels": torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]]),
             "index": torch.arange(2)}
    noise = []
    model.register_forward_pre_hook(lambda module, args, kwargs: noise.append(kwargs["gate_noise"]), with_kwargs=True)
    for epochs_done, weight in ((0.5, 0.0), (2.0, 0.25), (3.5, 0.5)):
        loss_fn = classifier_loss(model, cfg, epoch=int(epochs_done), epochs_done=epochs_done,
                                  gate_generator=torch.Generator().manual_seed(1))
        loss, parts = loss_fn(batch, contextlib.nullcontext)
        assert torch.equal(parts[0], loss.detach().double())
        torch.testing.assert_close(parts[0], parts[1] + weight * parts[2])
        assert torch.equal(noise[-1], torch.ones(model.config.depth, model.config.num_heads)) == (weight == 0.0)
