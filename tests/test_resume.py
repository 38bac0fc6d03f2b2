"""Exact resume after SIGKILL, atomic checkpoints, and a non-finite loss that stops training cleanly."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kyam_lib.train as train_module
from kyam_lib.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, load_training_state,
                                 remove_stale_temporaries)
from kyam_lib.train import TrainingError, train
from train_helpers import log_records, smoke_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    # Bit-identical comparisons with the CLI subprocess (OMP_NUM_THREADS=1) need the same threading.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out_dir / "model" / "model.safetensors"))


def hidden_entries(out_dir: Path) -> list[str]:
    return sorted(p.name for folder in (out_dir, out_dir / "checkpoints") if folder.is_dir()
                  for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow  # a subprocess: imports torch again
def test_sigkill_after_epoch_then_resume_matches_uninterrupted(data_root, tmp_path):
    cfg = smoke_config(data_root, tmp_path / "killed", epochs=3)
    reference = train(smoke_config(data_root, tmp_path / "reference", epochs=3), show_progress=False)

    cfg_file = tmp_path / "run.json"
    cfg.to_json(cfg_file)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = Path(cfg.out_dir)
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "kyam_lib.train", "--config", str(cfg_file)],
                                   cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 180
        while not (out / "checkpoints" / "epoch_0001").is_dir():
            assert process.poll() is None, f"training ended early: {(tmp_path / 'stderr.txt').read_text()}"
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("no checkpoint within 180 s")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    killed_after = int(latest_checkpoint(out).name.split("_")[1])
    assert 1 <= killed_after < 3

    # What a kill in the middle of a save leaves: hidden temporaries with truncated files.
    stale = out / "checkpoints" / f".epoch_{killed_after + 1:04d}.x1y2.tmp"
    stale.mkdir()
    real = latest_checkpoint(out) / "model.safetensors"
    (stale / "model.safetensors").write_bytes(real.read_bytes()[:100])
    (out / ".metrics.json.abcd.tmp").write_text('{"epoch": ')
    assert latest_checkpoint(out).name == f"epoch_{killed_after:04d}"

    resumed = train(cfg, resume=True, show_progress=False)
    assert resumed == reference
    assert json.loads((out / "metrics.json").read_text()) == json.loads(
        (tmp_path / "reference" / "metrics.json").read_text())
    assert log_records(out) == log_records(tmp_path / "reference")
    mine, theirs = weights(out), weights(tmp_path / "reference")
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert hidden_entries(out) == []


def test_resume_of_a_finished_run_returns_its_metrics(data_root, tmp_path):
    cfg = smoke_config(data_root, tmp_path / "run", epochs=1)
    first = train(cfg, show_progress=False)
    (tmp_path / "run" / "metrics.json").unlink()  # killed after the last checkpoint, before metrics.json
    assert train(cfg, resume=True, show_progress=False) == first
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == first


def test_checkpoint_holds_every_state(data_root, tmp_path):
    cfg = smoke_config(data_root, tmp_path / "run", epochs=1)
    train(cfg, show_progress=False)
    state = load_training_state(tmp_path / "run" / "checkpoints" / "epoch_0001")
    assert state["epoch"] == 1
    assert set(state) == {"optimizer", "scheduler", "epoch", "record", "rng"}
    assert set(state["rng"]) == {"python", "numpy", "torch", "gate_generator"}
    assert state["scheduler"]["last_epoch"] == 6  # 96 images / batch 16, stepped per iteration
    num_parameters = sum(1 for _ in load_checkpoint(tmp_path / "run" / "model").model.parameters())
    assert len(state["optimizer"]["state"]) == num_parameters


def test_remove_stale_temporaries_restores_a_replaced_checkpoint(tmp_path):
    # Killed between "move the old version aside" and "move the new one in": the old one comes back.
    (tmp_path / ".model.old").mkdir()
    (tmp_path / ".model.old" / "model.safetensors").write_bytes(b"old")
    (tmp_path / "checkpoints" / ".epoch_0002.q.tmp").mkdir(parents=True)
    (tmp_path / ".log.jsonl.z.tmp").write_text("partial")
    (tmp_path / "checkpoints" / "epoch_0001").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".epoch_0002.q.tmp", ".log.jsonl.z.tmp"]
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == b"old"
    assert hidden_entries(tmp_path) == []
    assert (tmp_path / "checkpoints" / "epoch_0001").is_dir()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    steps_per_epoch = 96 // 16
    calls = {"n": 0}
    real_penalty = train_module.l0_penalty

    def penalty_turning_nan(model):
        calls["n"] += 1
        value = real_penalty(model)
        return value * float("nan") if calls["n"] > steps_per_epoch + 2 else value

    monkeypatch.setattr(train_module, "l0_penalty", penalty_turning_nan)
    cfg = smoke_config(data_root, tmp_path / "run", epochs=3)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 2, step 3") as info:
        train(cfg, show_progress=False)
    assert str(tmp_path / "run") in str(info.value) and "epoch_0001" in str(info.value)
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001"]
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    assert len(log_records(out)) == 1
    kept = load_checkpoint(out / "checkpoints" / "epoch_0001")
    assert all(torch.isfinite(p).all() for p in kept.model.parameters())
    # The kept checkpoint is a working resume point once the cause is gone.
    monkeypatch.setattr(train_module, "l0_penalty", real_penalty)
    assert train(cfg, resume=True, show_progress=False)["epoch"] == 3


def test_absurd_learning_rate_fails_before_writing_anything(data_root, tmp_path):
    cfg = smoke_config(data_root, tmp_path / "run", lr=1e30, grad_clip=0.0, epochs=1)
    with pytest.raises(TrainingError, match="non-finite .* at epoch 1.*no checkpoint had been written yet"):
        train(cfg, show_progress=False)
    assert not (tmp_path / "run").exists()


def test_fresh_run_replaces_an_earlier_run_only_when_it_writes(data_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(smoke_config(data_root, out, epochs=2), show_progress=False)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    # A fresh run that fails in its first epoch leaves the earlier run untouched ...
    monkeypatch.setattr(train_module, "l0_penalty", lambda model: torch.tensor(float("inf")))
    with pytest.raises(TrainingError):
        train(smoke_config(data_root, out, epochs=1, seed=5), show_progress=False)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    monkeypatch.undo()
    # ... one that gets through an epoch replaces it, so no old checkpoint or log line survives.
    train(smoke_config(data_root, out, epochs=1, seed=5), show_progress=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001"]
    assert len(log_records(out)) == 1
    assert json.loads((out / "config.json").read_text())["seed"] == 5


def test_resume_with_a_different_model_is_refused(data_root, tmp_path):
    out = tmp_path / "run"
    train(smoke_config(data_root, out, epochs=1), show_progress=False)
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    differs = r"epoch_0001: its model differs from this run.s config in embed_dim \(checkpoint 64, run 128\), depth"
    with pytest.raises(CheckpointError, match=differs):
        train(smoke_config(data_root, out, epochs=2, model_size="small"), resume=True, show_progress=False)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == listing
