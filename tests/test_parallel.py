"""Runs side by side: the pool keeps order and errors, and a run's weights do not depend on it."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
from safetensors.torch import load_file

from kyam_lib import experiments
from kyam_lib.config import ConfigError, TrainConfig
from kyam_lib.parallel import JOBS_ENV, map_in_processes, parallel_jobs
from kyam_lib.runtime import cpu_threads


def _root(x: float) -> float:
    return math.sqrt(x)


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


def test_map_in_processes_keeps_order_and_raises():
    calls = [{"x": 4.0}, {"x": 9.0}, {"x": 16.0}]
    assert map_in_processes(_root, calls, jobs=2) == [2.0, 3.0, 4.0]
    assert map_in_processes(_root, calls, jobs=1) == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="three"):
        map_in_processes(_fail_on_three, [{"x": 1}, {"x": 3}], jobs=2)


def test_parallel_jobs(monkeypatch):
    monkeypatch.delenv(JOBS_ENV, raising=False)
    assert parallel_jobs(1, cpu_count=2) == 2
    assert parallel_jobs(2, cpu_count=2) == 1 and parallel_jobs(4, cpu_count=2) == 1
    assert parallel_jobs(0, cpu_count=16) == 1  # torch's default threads: the whole CPU
    assert parallel_jobs(1, cpu_count=16, cuda=True) == 1
    monkeypatch.setenv(JOBS_ENV, "3")
    assert parallel_jobs(1, cpu_count=2) == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(JOBS_ENV, bad)
        with pytest.raises(ValueError, match=JOBS_ENV):
            parallel_jobs(1)


def test_cpu_threads_context_restores_and_config_checks():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="cpu_threads"):
        TrainConfig(cpu_threads=-1).validate()


def _weights(run_dir) -> str:
    """A digest of the tensors (the file's bytes also hold a metadata map whose order varies by process)."""
    tensors = load_file(run_dir / "model" / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].numpy().tobytes())
    return digest.hexdigest()


def test_train_runs_side_by_side_give_the_weights_of_runs_one_by_one(data_root, tmp_path, monkeypatch):
    monkeypatch.delenv(JOBS_ENV, raising=False)
    runs = ["full", "cam"]
    kwargs = dict(data_root=str(data_root), epochs=1, max_train_images=32, max_val_images=16, cpu_threads=1)
    specs = [experiments.RunSpec(name, name, {k: v for k, v in kwargs.items() if k != "data_root"}) for name in runs]
    side = experiments.train_runs("smoke", specs, data_root=str(data_root), runs_dir=tmp_path / "a", jobs=2)
    alone = experiments.train_runs("smoke", specs, data_root=str(data_root), runs_dir=tmp_path / "b", jobs=1)
    assert [p.name for p in side] == [p.name for p in alone]
    assert [p.name.split("_")[0] for p in side] == ["full", "cam"]
    assert [_weights(p) for p in side] == [_weights(p) for p in alone]
    assert all(TrainConfig.from_json(p / "config.json").cpu_threads == 1 for p in side)
    # cached now: nothing left to train, the same directories come back
    assert experiments.train_runs("smoke", specs, data_root=str(data_root), runs_dir=tmp_path / "a") == side


def test_train_runs_trains_two_specs_of_one_run_once(data_root, tmp_path, monkeypatch):
    # lambda = 0.01 is the "full" run: the two specs must not go to two processes (one directory)
    import kyam_lib.experiments.runs as runs_module
    sent = []

    def serial(function, calls, jobs):
        sent.extend(calls)
        return [function(**call) for call in calls]

    monkeypatch.setattr(runs_module, "map_in_processes", serial)
    small = dict(epochs=1, max_train_images=32, max_val_images=16, cpu_threads=1)
    lam = experiments.lambda_run(0.01)
    specs = [experiments.RunSpec("full", "full", small), experiments.RunSpec(lam.label, lam.variant, {**lam.overrides, **small}),
             experiments.RunSpec("cam", "cam", small)]
    dirs = experiments.train_runs("smoke", specs, data_root=str(data_root), runs_dir=tmp_path, jobs=2)
    assert [call["variant"] for call in sent] == ["full", "cam"]
    assert dirs[0] == dirs[1] != dirs[2]
    assert len((dirs[0] / "log.jsonl").read_text().splitlines()) == 1
