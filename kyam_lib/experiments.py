"""The comparisons of the paper as TrainConfig overrides, and the shared, cached runs behind them.

Every variant is trained by the same loop on the same data for the same epochs, and evaluated by
the same pseudo-mask code; only the fields below differ. `eval_blocks` is the class-map block
selection used when evaluating the variant (see `kyam_lib.evaluate.EvalConfig.blocks`).

Runs are cached: a configuration lives in ``<runs_dir>/<preset>/<dataset>/<name>_seed<k>``, where
`name` is the variant whose configuration it equals (so the lambda = 0.01 run, the mask-rate 0.5
run and "full" are one run, and mask rate 0 is "no_masking"), else the variant plus its differing
fields. A directory whose config.json equals the requested config and that has metrics.json is
reused; one with the same config but no metrics.json is resumed; one with another config is
retrained from scratch. Evaluations are cached the same way under ``<run>/eval``.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .config import TrainConfig
from .io import read_json
from .presets import preset_overrides

__all__ = [
    "VARIANTS", "BASELINES", "LAMBDAS", "MASK_RATES", "LAMBDA_LABELS", "MASK_RATE_LABELS", "EVAL_MAX_IMAGES", "RunSpec", "variant_overrides",
    "eval_blocks_for", "lambda_run", "mask_rate_run", "experiment_config", "run_variant", "evaluate_variant",
    "result_row", "run_table",
]

VARIANTS: dict[str, dict[str, Any]] = {
    # ours: class tokens + [REG] + head gates (lambda 0.01) + masking 0.5
    "full": {},
    "no_masking": {"mask_rate": 0.0},
    "no_reg": {"use_reg_token": False},
    # "without head pruning": lambda = 0 and no gates at all, so no head can close (sparsity 0)
    "no_pruning": {"l0_weight": 0.0, "use_head_gates": False},
    # CAM: a standard ViT with one [CLS] token; per-patch classifier, global average pooling
    "cam": {"classifier": "cam", "use_reg_token": False, "use_head_gates": False, "l0_weight": 0.0,
            "mask_rate": 0.0},
    # MCTformer-style: class tokens whose channel mean is the logit; no masking, [REG] or gates
    "mctformer": {"classifier": "token_mean", "use_reg_token": False, "use_head_gates": False,
                  "l0_weight": 0.0, "mask_rate": 0.0},
}
BASELINES: tuple[str, ...] = ("cam", "mctformer")  # other methods: head sparsity does not apply

LAMBDAS: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)
MASK_RATES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
# Row labels of the sweeps: the keys of results/summary.json.
LAMBDA_LABELS: dict[float, str] = dict(zip(LAMBDAS, ("0", "0.001", "0.01", "0.1")))
MASK_RATE_LABELS: dict[float, str] = dict(zip(MASK_RATES, ("0", "0.25", "0.5", "0.75", "1.0")))

# Images per split used when scoring pseudo-masks (0 = the whole split); smoke runs score a few.
EVAL_MAX_IMAGES: dict[str, int] = {"smoke": 32, "quick": 300, "full": 0, "paper": 0}


def variant_overrides(name: str) -> dict[str, Any]:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known variants: {sorted(VARIANTS)}")
    return dict(VARIANTS[name])


def eval_blocks_for(name: str, depth: int) -> str:
    """Block selection for a variant's class maps: all blocks for ours, the last quarter for MCTformer."""
    if name == "mctformer":
        return f"last:{max(1, -(-depth // 4))}"
    return "all"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One row of a comparison: a label, the variant it starts from and its extra TrainConfig fields."""

    label: str
    variant: str = "full"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


def lambda_run(l0_weight: float) -> RunSpec:
    """The run of the lambda sweep: lambda = 0 is "no_pruning" (no gates), 0.01 is "full"."""
    label = LAMBDA_LABELS.get(l0_weight, f"{l0_weight:g}")
    if l0_weight == 0:
        return RunSpec(label, "no_pruning")
    return RunSpec(label, "full", {"l0_weight": float(l0_weight)})


def mask_rate_run(mask_rate: float) -> RunSpec:
    """The run of the masking-ratio sweep (0 is "no_masking", 0.5 is "full")."""
    return RunSpec(MASK_RATE_LABELS.get(mask_rate, f"{mask_rate:g}"), "full", {"mask_rate": float(mask_rate)})


def _config_values(preset: str, variant: str, *, seed: int, dataset: str, data_root: str,
                   overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(TrainConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} in the overrides of variant {variant!r}")
    return {**TrainConfig().to_dict(), **preset_overrides(preset), **variant_overrides(variant),
            "dataset": dataset, "data_root": data_root, "seed": seed, **overrides}


def _resolve_data_root(data_root: str) -> str:
    from .data import default_data_root

    return str(Path(data_root).expanduser().resolve() if data_root else default_data_root().resolve())


def _run_name(preset: str, variant: str, values: dict[str, Any], *, seed: int, dataset: str,
              data_root: str) -> str:
    """The first variant whose config equals `values`, else `variant` plus the fields that differ from it."""
    def comparable(v: dict[str, Any]) -> dict[str, Any]:
        return TrainConfig.from_dict({**v, "out_dir": ""}).to_dict()

    target = comparable(values)
    for name in VARIANTS:
        if comparable(_config_values(preset, name, seed=seed, dataset=dataset, data_root=data_root,
                                     overrides={})) == target:
            return name
    base = comparable(_config_values(preset, variant, seed=seed, dataset=dataset, data_root=data_root,
                                     overrides={}))
    diffs = [f"{key}-{_short(target[key])}" for key in sorted(target) if target[key] != base[key]]
    return "_".join([variant, *diffs])


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_short(v) for v in value)
    return str(value).replace("/", "-")


def experiment_config(preset: str, variant: str = "full", *, seed: int = 0, dataset: str = "shapes",
                      data_root: str = "", runs_dir: str | Path = "runs", **overrides: Any) -> TrainConfig:
    """The TrainConfig of `variant` under `preset`, with its cached run directory as out_dir."""
    data_root = _resolve_data_root(data_root)
    values = _config_values(preset, variant, seed=seed, dataset=dataset, data_root=data_root, overrides=overrides)
    name = _run_name(preset, variant, values, seed=seed, dataset=dataset, data_root=data_root)
    out_dir = Path(runs_dir) / preset / dataset / f"{name}_seed{seed}"
    return TrainConfig.from_dict({**values, "out_dir": str(out_dir)})


def _same_config(path: Path, cfg: Any) -> bool:
    if not path.is_file():
        return False
    try:
        return type(cfg).from_json(path).to_dict() == cfg.to_dict()
    except (ValueError, FileNotFoundError):
        return False


def run_variant(preset: str, variant: str = "full", *, seed: int = 0, dataset: str = "shapes", data_root: str = "",
                runs_dir: str | Path = "runs", show_progress: bool = False, **overrides: Any) -> Path:
    """Train `variant` (plus `overrides`) under `preset` unless an identical run exists; returns the run dir."""
    from .train import train  # imported here: this module is also used for naming alone

    cfg = experiment_config(preset, variant, seed=seed, dataset=dataset, data_root=data_root,
                            runs_dir=runs_dir, **overrides)
    run_dir = Path(cfg.out_dir)
    same = _same_config(run_dir / "config.json", cfg)
    if same and (run_dir / "metrics.json").is_file() and (run_dir / "model").is_dir():
        return run_dir
    if run_dir.exists() and not same:
        shutil.rmtree(run_dir)  # another configuration under this name (a preset changed): start again
    print(f"training {run_dir}")
    train(cfg, resume=same, show_progress=show_progress)
    shutil.rmtree(run_dir / "eval", ignore_errors=True)  # scores of an older model
    return run_dir


def evaluate_variant(run_dir: str | Path, variant: str = "full", *, preset: str | None = None,
                     max_images: int | None = None, save_masks: bool = True) -> dict[str, Any]:
    """Pseudo-mask scores of a trained run (cached in <run_dir>/eval); see `kyam_lib.evaluate.evaluate_run`."""
    from .evaluate import EvalConfig, evaluate_run
    from .model import MODEL_SIZES

    run_dir = Path(run_dir)
    train_cfg = TrainConfig.from_json(run_dir / "config.json")
    if max_images is None:
        max_images = EVAL_MAX_IMAGES.get(preset or "", 0)
    depth = MODEL_SIZES[train_cfg.model_size][1]
    cfg = EvalConfig(run_dir=str(run_dir), out_dir=str(run_dir / "eval"), blocks=eval_blocks_for(variant, depth),
                     max_images=max_images, save_masks=save_masks,
                     splits=(train_cfg.train_split, train_cfg.val_split), select_split=train_cfg.train_split)
    eval_dir = run_dir / "eval"
    if _same_config(eval_dir / "config.json", cfg) and (eval_dir / "metrics.json").is_file():
        return read_json(eval_dir / "metrics.json")
    print(f"evaluating {run_dir}")
    return evaluate_run(cfg)


def result_row(run_dir: str | Path, variant: str, summary: dict[str, Any], *, label: str = "") -> dict[str, Any]:
    """One flat table row: the run's identity, its pseudo-mask scores (val and train) and classifier scores."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_json(run_dir / "config.json")
    splits = summary["splits"]
    val, train_split = splits[cfg.val_split], splits.get(cfg.train_split, {})
    return {
        "label": label or variant, "variant": variant, "dataset": cfg.dataset, "seed": cfg.seed,
        "l0_weight": cfg.l0_weight, "mask_rate": cfg.mask_rate,
        "miou": val["miou"], "miou_train": train_split.get("miou"),
        "pixel_acc": val["pixel_acc"], "pixel_acc_train": train_split.get("pixel_acc"),
        "classifier_acc": val["classifier_acc"], "classifier_map": val.get("classifier_map"),
        # Head sparsity is a property of our gated model; the baselines are other architectures.
        "sparsity": None if variant in BASELINES else summary["sparsity"],
        "mean_threshold_miou": val.get("mean_threshold_miou"),
        "background_score": summary.get("background_score"),
        "oracle": summary["oracle"], "blocks": summary["blocks"], "run_dir": str(run_dir),
    }


def run_table(preset: str, runs: Sequence[RunSpec | str], *, seeds: Sequence[int] = (0,), dataset: str = "shapes",
              data_root: str = "", runs_dir: str | Path = "runs", eval_max_images: int | None = None) -> pd.DataFrame:
    """Train (or reuse) and evaluate every run for every seed; one row per (run, seed)."""
    rows = []
    for spec in runs:
        spec = RunSpec(spec, spec) if isinstance(spec, str) else spec
        for seed in seeds:
            run_dir = run_variant(preset, spec.variant, seed=seed, dataset=dataset, data_root=data_root,
                                  runs_dir=runs_dir, **spec.overrides)
            summary = evaluate_variant(run_dir, spec.variant, preset=preset, max_images=eval_max_images)
            rows.append(result_row(run_dir, spec.variant, summary, label=spec.label))
    return pd.DataFrame(rows)
