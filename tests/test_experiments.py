"""Variant configs and the run cache shared by the notebooks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kyam_lib.presets import run_family

from kyam_lib import experiments
from kyam_lib.config import TrainConfig


def run_name(cfg: TrainConfig) -> str:
    return "/".join(Path(cfg.out_dir).parts[-3:])


@pytest.mark.parametrize("variant, overrides, expected", [
    ("full", {}, "quick/shapes/full_seed0"),
    ("full", {"l0_weight": 0.01}, "quick/shapes/full_seed0"),          # lambda 0.01 is ours
    ("full", {"mask_rate": 0.5}, "quick/shapes/full_seed0"),           # so is mask rate 0.5
    ("full", {"mask_rate": 0.0}, "quick/shapes/no_masking_seed0"),     # mask rate 0 is "no masking"
    ("full", {"l0_weight": 0.001}, "quick/shapes/full_l0_weight-0.001_seed0"),
    ("full", {"mask_rate": 0.25}, "quick/shapes/full_mask_rate-0.25_seed0"),
    ("no_pruning", {}, "quick/shapes/no_pruning_seed0"),
    ("cam", {"epochs": 3}, "quick/shapes/cam_epochs-3_seed0"),
])
def test_run_names_are_the_variant_whose_config_they_equal(variant, overrides, expected):
    assert run_name(experiments.experiment_config("quick", variant, **overrides)) == expected


def test_sweep_specs_map_onto_named_variants():
    assert [spec.label for spec in experiments.lambda_runs()] == ["0", "0.001", "0.01", "0.1"]
    assert [spec.label for spec in experiments.mask_rate_runs()] == ["0", "0.25", "0.5", "0.75", "1.0"]
    names = [run_name(experiments.experiment_config("full", spec.variant, **spec.overrides))
             for spec in experiments.lambda_runs()]
    # "full" has the quick settings: its runs are quick's (one cache folder, run_family)
    assert names == ["quick/shapes/no_pruning_seed0", "quick/shapes/full_l0_weight-0.001_seed0",
                     "quick/shapes/full_seed0", "quick/shapes/full_l0_weight-0.1_seed0"]
    assert run_family("full") == "quick" and run_family("smoke") == "smoke" and run_family("paper") == "paper"
    assert experiments.experiment_config("quick", "mctformer").lr == 5e-3  # a baseline's own lr (VARIANT_PRESETS)
    assert experiments.experiment_config("quick", "cam").lr == experiments.experiment_config("quick", "full").lr
    cfg = experiments.experiment_config("quick", "no_pruning")
    assert cfg.l0_weight == 0.0 and not cfg.use_head_gates


def test_config_carries_preset_variant_seed_and_dataset(tmp_path):
    cfg = experiments.experiment_config("smoke", "no_reg", seed=2, dataset="regions", data_root=str(tmp_path),
                                        runs_dir=tmp_path / "runs")
    assert cfg.model_size == "tiny" and cfg.epochs == 2        # smoke preset
    assert cfg.use_reg_token is False and cfg.seed == 2 and cfg.dataset == "regions"
    assert cfg.data_root == str(tmp_path.resolve())
    assert Path(cfg.out_dir) == tmp_path / "runs" / "smoke" / "regions" / "no_reg_seed2"


def test_bad_names_are_errors():
    with pytest.raises(ValueError, match="l0_wieght"):
        experiments.experiment_config("quick", "full", l0_wieght=0.1)
    with pytest.raises(ValueError, match="no_such_variant"):
        experiments.experiment_config("quick", "no_such_variant")
    with pytest.raises(ValueError, match="no_such_preset"):
        experiments.experiment_config("no_such_preset")
    with pytest.raises(ValueError, match="lr_typo"):
        experiments.given(lr_typo=1.0)
    assert experiments.given(lr=None, epochs=3) == {"epochs": 3}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from kyam_lib.data import generate_shapes

    root = tmp_path_factory.mktemp("experiments_data")
    generate_shapes(root / "shapes", num_train=48, num_val=24)
    return root


def test_run_variant_trains_once_resumes_and_retrains_on_a_new_config(data_root, tmp_path, capsys):
    kwargs = {"data_root": str(data_root), "runs_dir": tmp_path, "max_train_images": 32, "max_val_images": 16,
              "epochs": 1}
    run_dir = experiments.run_variant("smoke", "full", **kwargs)
    metrics_file = run_dir / "metrics.json"
    first = metrics_file.stat().st_mtime_ns
    assert "training" in capsys.readouterr().out

    # the same configuration again (also reached as lambda 0.01): reused, not trained
    assert experiments.run_variant("smoke", "full", l0_weight=0.01, **kwargs) == run_dir
    assert metrics_file.stat().st_mtime_ns == first
    assert "training" not in capsys.readouterr().out

    # evaluation is cached too
    summary = experiments.evaluate_variant(run_dir, "full", max_images=8)
    assert "evaluating" in capsys.readouterr().out
    assert experiments.evaluate_variant(run_dir, "full", max_images=8) == summary
    assert "evaluating" not in capsys.readouterr().out
    row = experiments.result_row(run_dir, "full", summary)
    assert row["miou"] == summary["splits"]["val"]["miou"] and row["sparsity"] == summary["sparsity"]
    assert experiments.result_row(run_dir, "cam", summary)["sparsity"] is None  # baselines: does not apply

    # an interrupted run (no metrics.json) is completed, keeping its epochs
    metrics_file.unlink()
    experiments.run_variant("smoke", "full", **kwargs)
    assert metrics_file.is_file()
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 1

    # moving the data or changing workers and device keeps the finished run: nothing is retrained
    moved = tmp_path / "moved_data"
    shutil.copytree(data_root, moved)
    kept = metrics_file.stat().st_mtime_ns
    capsys.readouterr()
    assert experiments.run_variant("smoke", "full", **{**kwargs, "data_root": str(moved), "num_workers": 1,
                                                       "device": "cpu"}) == run_dir
    assert metrics_file.stat().st_mtime_ns == kept and "training" not in capsys.readouterr().out
    assert json.loads((run_dir / "config.json").read_text())["data_root"] == str(moved.resolve())

    # a directory holding another configuration (a changed preset) is kept; the new run goes beside it
    stored = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**stored, "lr": 0.5}))
    new_dir = experiments.run_variant("smoke", "full", **kwargs)
    assert new_dir == run_dir.with_name(run_dir.name + "-2") and (new_dir / "metrics.json").is_file()
    assert metrics_file.stat().st_mtime_ns == kept  # the finished run is untouched
    assert json.loads((run_dir / "config.json").read_text())["lr"] == 0.5
    assert experiments.run_variant("smoke", "full", **kwargs) == new_dir  # and is found again


def test_run_table_rows(data_root, tmp_path):
    rows = experiments.run_table("smoke", [experiments.lambda_run(0.0), "cam"], data_root=str(data_root),
                                 runs_dir=tmp_path, eval_max_images=8)
    assert rows["label"].tolist() == ["0", "cam"]
    assert rows["variant"].tolist() == ["no_pruning", "cam"]
    assert rows.loc[0, "sparsity"] == 0.0 and pd.isna(rows.loc[1, "sparsity"])
    assert ((rows["miou"] >= 0) & (rows["miou"] <= 1)).all()
    assert (rows["blocks"] == "all").all()
