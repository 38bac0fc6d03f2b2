"""The comparisons of the paper as TrainConfig overrides, and the shared, cached runs behind them.

Every variant is trained by the same loop on the same data for the same epochs, and evaluated by
the same pseudo-mask code; only the fields below differ. `eval_blocks` is the class-map block
selection used when evaluating the variant (see `kyam_lib.evaluate.EvalConfig.blocks`).

Runs are cached: a configuration lives in ``<runs_dir>/<preset>/<dataset>/<name>_seed<k>``, where
`name` is the variant whose configuration it equals (so the lambda = 0.01 run, the mask-rate 0.5
run and "full" are one run, and mask rate 0 is "no_masking"), else the variant plus its differing
fields. Configs are compared on the fields that change what is computed: placement fields
(data_root, num_workers, device, out_dir, checkpoint cadence; `kyam_lib.protocol.PLACEMENT_FIELDS`)
are ignored, so moving the data keeps a finished run (its config.json then records the new
placement). A matching directory with metrics.json is reused, one without is resumed; a config that
really differs goes to the next free ``<name>_seed<k>-2``, ``-3``, ...: nothing finished is deleted.
Evaluations are cached the same way under ``<run>/eval``, segmentation runs as ``seg_*_seed<k>[-n]``.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from .config import TrainConfig
from .data import ensure_dataset
from .io import read_json, write_json
from .parallel import map_in_processes, parallel_jobs
from .presets import preset_overrides, run_family, seg_preset_overrides, variant_preset_overrides
from .protocol import PLACEMENT_FIELDS, computed_fields, dataset_options, resolve_train_split

__all__ = [
    "VARIANTS", "BASELINES", "ABLATIONS", "LAMBDAS", "MASK_RATES", "LAMBDA_LABELS", "MASK_RATE_LABELS",
    "EVAL_MAX_IMAGES", "RunSpec", "variant_overrides",
    "eval_blocks_for", "lambda_run", "mask_rate_run", "experiment_config", "train_runs", "run_variant", "evaluate_variant",
    "result_row", "run_table", "training_log", "learning_log", "eval_frames", "load_run_model", "head_gate_maps", "sample_ids",
    "qualitative_samples", "class_maps_of", "segmentation_config", "run_segmentation",
    "SYNTHETIC_DATASETS", "Session", "session", "lambda_runs", "mask_rate_runs", "given", "gate_maps_for",
    "training_summary", "data_overview",
]

VARIANTS: dict[str, dict[str, Any]] = {
    # ours: class tokens + [REG] + head gates (lambda 0.01) + masking 0.5
    "full": {},
    "no_masking": {"mask_rate": 0.0},
    "no_reg": {"use_reg_token": False},
    # "without head pruning": lambda = 0 and no gates at all, so no head can close (sparsity 0)
    "no_pruning": {"l0_weight": 0.0, "use_head_gates": False},
    # the fourth cell of masking x pruning: masking and pruning interact (METHOD.md)
    "no_masking_no_pruning": {"mask_rate": 0.0, "l0_weight": 0.0, "use_head_gates": False},
    # CAM: a standard ViT with one [CLS] token; per-patch classifier, global average pooling
    "cam": {"classifier": "cam", "use_reg_token": False, "use_head_gates": False, "l0_weight": 0.0,
            "mask_rate": 0.0},
    # MCTformer-style: class tokens whose channel mean is the logit; no masking, [REG] or gates
    "mctformer": {"classifier": "token_mean", "use_reg_token": False, "use_head_gates": False,
                  "l0_weight": 0.0, "mask_rate": 0.0},
}
BASELINES: tuple[str, ...] = ("cam", "mctformer")  # other methods: head sparsity does not apply
ABLATIONS: tuple[str, ...] = ("full", "no_masking", "no_reg", "no_pruning", "no_masking_no_pruning")

LAMBDAS: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)
MASK_RATES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
# Row labels of the sweeps: the keys of results/summary.json.
LAMBDA_LABELS: dict[float, str] = dict(zip(LAMBDAS, ("0", "0.001", "0.01", "0.1")))
MASK_RATE_LABELS: dict[float, str] = dict(zip(MASK_RATES, ("0", "0.25", "0.5", "0.75", "1.0")))

# At most this many images per split are scored (0 = all the images the run itself trained and
# validated on); the downstream segmentation models train on exactly the scored training images.
EVAL_MAX_IMAGES: dict[str, int] = {"smoke": 32, "quick": 300, "full": 300, "paper": 0}


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


def lambda_runs() -> list[RunSpec]:
    return [lambda_run(value) for value in LAMBDAS]


def mask_rate_runs() -> list[RunSpec]:
    return [mask_rate_run(value) for value in MASK_RATES]


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None: a notebook's TrainConfig parameters left at None keep the preset's value."""
    unknown = sorted(set(fields) - set(TrainConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}")
    return {name: value for name, value in fields.items() if value is not None}


def _config_values(preset: str, variant: str, *, seed: int, dataset: str, data_root: str,
                   overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(TrainConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} in the overrides of variant {variant!r}")
    return {**TrainConfig().to_dict(), **preset_overrides(preset, dataset), **variant_overrides(variant),
            **variant_preset_overrides(preset, variant),
            "dataset": dataset, "data_root": data_root, "seed": seed, **overrides}


def _resolve_data_root(data_root: str) -> str:
    from .data import default_data_root

    return str(Path(data_root).expanduser().resolve() if data_root else default_data_root().resolve())


def _run_name(preset: str, variant: str, values: dict[str, Any], *, seed: int, dataset: str,
              data_root: str) -> str:
    """The first variant whose config equals `values`, else `variant` plus the fields that differ (placement aside)."""
    def comparable(v: dict[str, Any]) -> dict[str, Any]:
        return computed_fields(TrainConfig.from_dict({**v, "out_dir": ""}).to_dict())

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
    out_dir = Path(runs_dir) / run_family(preset) / dataset / f"{name}_seed{seed}"
    return TrainConfig.from_dict({**values, "out_dir": str(out_dir)})


def _same_config(path: Path, cfg: Any) -> bool:
    """True when the config stored at `path` computes what `cfg` computes (placement fields aside)."""
    try:
        return path.is_file() and computed_fields(type(cfg).from_json(path).to_dict()) == computed_fields(cfg.to_dict())
    except (ValueError, FileNotFoundError):
        return False


def _candidate_dirs(base: Path):
    """base, base-2, base-3, ...: the directories a cached run of one name may live in."""
    yield base
    yield from (base.with_name(f"{base.name}-{number}") for number in itertools.count(2))


def _record_placement(run_dir: Path, cfg: Any) -> None:
    """Point a reused run's config.json at the current placement (data_root, device, ...)."""
    stored, current = read_json(run_dir / "config.json"), {k: v for k, v in cfg.to_dict().items() if k in PLACEMENT_FIELDS}
    if any(stored.get(k) != v for k, v in current.items() if k != "out_dir"):
        write_json(run_dir / "config.json", {**stored, **current, "out_dir": stored.get("out_dir", str(run_dir))})


def _cached_run(cfg: TrainConfig) -> tuple[Path, bool, bool]:
    """(run dir, finished, same config) of cfg in the cache: a finished run to reuse, the same run
    unfinished (to resume), or the first directory no run has written to yet."""
    for run_dir in _candidate_dirs(Path(cfg.out_dir)):
        same = _same_config(run_dir / "config.json", cfg)
        if same and (run_dir / "metrics.json").is_file() and (run_dir / "model").is_dir():
            return run_dir, True, True
        if same or not (run_dir / "config.json").exists():
            return run_dir, False, same
    raise AssertionError("unreachable: _candidate_dirs is endless")


def train_runs(preset: str, runs: Sequence[RunSpec | str], *, seeds: Sequence[int] = (0,),
               datasets: Sequence[str] = ("shapes",), data_root: str = "", runs_dir: str | Path = "runs",
               jobs: int | None = None) -> list[Path]:
    """Train every (run, seed, dataset) that is not cached yet, side by side when the runs fix their
    CPU threads (`TrainConfig.cpu_threads`; see `kyam_lib.parallel`); returns the run dirs in order.

    `jobs`: processes at once (default: $KYAM_TRAIN_JOBS, else CPU count // cpu_threads).
    """
    calls, missing, threads = [], [], []
    for dataset in datasets:
        for spec in runs:
            spec = RunSpec(spec, spec) if isinstance(spec, str) else spec
            for seed in seeds:
                call = dict(preset=preset, variant=spec.variant, seed=seed, dataset=dataset, data_root=data_root,
                            runs_dir=str(runs_dir), **spec.overrides)
                calls.append(call)
                cfg, _ = resolve_train_split(experiment_config(**call))
                if not _cached_run(cfg)[1] and call not in missing:
                    missing.append(call)
                    threads.append(cfg.cpu_threads)
    if len(missing) > 1:
        if jobs is None:  # a run on torch's default threads (0) takes the whole CPU: one at a time
            jobs = parallel_jobs(0 if 0 in threads else max(threads), cuda=torch.cuda.is_available())
        if jobs > 1:
            for dataset in {call["dataset"] for call in missing}:  # generated once, before the processes start
                ensure_dataset(dataset, _resolve_data_root(data_root))
            map_in_processes(run_variant, missing, jobs)
    return [run_variant(**call) for call in calls]


def run_variant(preset: str, variant: str = "full", *, seed: int = 0, dataset: str = "shapes", data_root: str = "",
                runs_dir: str | Path = "runs", show_progress: bool = False, **overrides: Any) -> Path:
    """Train `variant` (plus `overrides`) under `preset` unless an equivalent run exists; returns the run dir."""
    from .train import train  # imported here: this module is also used for naming alone

    cfg = experiment_config(preset, variant, seed=seed, dataset=dataset, data_root=data_root,
                            runs_dir=runs_dir, **overrides)
    cfg, _ = resolve_train_split(cfg)
    run_dir, finished, same = _cached_run(cfg)
    if finished:
        _record_placement(run_dir, cfg)
        return run_dir
    cfg = cfg.replace(out_dir=str(run_dir))
    print(f"training {run_dir}")
    train(cfg, resume=same, show_progress=show_progress)
    for scores in ("eval", "eval_segmentation"):  # scores of an unfinished model's earlier evaluation
        shutil.rmtree(run_dir / scores, ignore_errors=True)
    return run_dir


def evaluate_variant(run_dir: str | Path, variant: str = "full", *, preset: str | None = None,
                     max_images: int | None = None, save_masks: bool = True,
                     eval_name: str = "eval", train_split: str | None = None) -> dict[str, Any]:
    """Pseudo-mask scores of a trained run (cached in <run_dir>/<eval_name>); see `kyam_lib.evaluate.evaluate_run`."""
    from .evaluate import EvalConfig, evaluate_run
    from .model import MODEL_SIZES

    run_dir = Path(run_dir)
    train_cfg = TrainConfig.from_json(run_dir / "config.json")
    if max_images is None:
        max_images = EVAL_MAX_IMAGES.get(preset or "", 0)
    depth = MODEL_SIZES[train_cfg.model_size][1]
    eval_dir = run_dir / eval_name
    # Pseudo-masks are scored on the split with ground truth for every image: VOC's train (1,464)
    # for a classifier trained on train_aug (10,582), as every WSSS method reports them.
    # `train_split` overrides it (the segmentation model trains on the run's own training split).
    scored = train_split or ("train" if train_cfg.train_split == "train_aug" else train_cfg.train_split)
    cfg = EvalConfig(run_dir=str(run_dir), out_dir=str(eval_dir), blocks=eval_blocks_for(variant, depth),
                     max_images=max_images, save_masks=save_masks,
                     splits=(scored, train_cfg.val_split), select_split=scored)
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
    trained = read_json(run_dir / "metrics.json")
    return {
        "label": label or variant, "variant": variant, "dataset": cfg.dataset, "seed": cfg.seed,
        "l0_weight": cfg.l0_weight, "mask_rate": cfg.mask_rate,
        "miou": val["miou"], "miou_train": train_split.get("miou"),
        "pixel_acc": val["pixel_acc"], "pixel_acc_train": train_split.get("pixel_acc"),
        "classifier_acc": val["classifier_acc"], "classifier_map": val.get("classifier_map"),
        # the all-negative rate of the run's val images: a classifier at it has not learned
        "chance_acc": trained.get("val_chance_acc"),
        # Head sparsity is a property of our gated model; the baselines are other architectures.
        "sparsity": None if variant in BASELINES else summary["sparsity"],
        "mean_threshold_miou": val.get("mean_threshold_miou"),
        "background_score": summary.get("background_score"),
        "class_source": ",".join(f"{k}:{v}" for k, v in summary["class_source"].items()),
        "blocks": summary["blocks"], "run_dir": str(run_dir),
    }


def run_table(preset: str, runs: Sequence[RunSpec | str], *, seeds: Sequence[int] = (0,), dataset: str = "shapes",
              data_root: str = "", runs_dir: str | Path = "runs", eval_max_images: int | None = None,
              jobs: int | None = None) -> pd.DataFrame:
    """Train (or reuse; side by side, see `train_runs`) and evaluate every run for every seed; one row per (run, seed)."""
    train_runs(preset, runs, seeds=seeds, datasets=[dataset], data_root=data_root, runs_dir=runs_dir, jobs=jobs)
    rows = []
    for spec in runs:
        spec = RunSpec(spec, spec) if isinstance(spec, str) else spec
        for seed in seeds:
            run_dir = run_variant(preset, spec.variant, seed=seed, dataset=dataset, data_root=data_root,
                                  runs_dir=runs_dir, **spec.overrides)
            summary = evaluate_variant(run_dir, spec.variant, preset=preset, max_images=eval_max_images)
            rows.append(result_row(run_dir, spec.variant, summary, label=spec.label))
    return pd.DataFrame(rows)


# ---- what the notebooks read back from runs ----------------------------------------------------
def training_log(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """The log.jsonl of each run (one row per epoch), with its seed."""
    frames = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        log = pd.read_json(run_dir / "log.jsonl", lines=True)
        log["seed"] = TrainConfig.from_json(run_dir / "config.json").seed
        frames.append(log)
    return pd.concat(frames, ignore_index=True)


def learning_log(rows: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch log of every row of a `run_table` (label, dataset, seed; `gated` for runs with gates)."""
    frames = []
    for row in rows.itertuples(index=False):
        log = pd.read_json(Path(row.run_dir) / "log.jsonl", lines=True)
        cfg = TrainConfig.from_json(Path(row.run_dir) / "config.json")
        log.insert(0, "seed", row.seed)
        log.insert(0, "dataset", row.dataset)
        log.insert(0, "label", row.label)
        log["gated"] = cfg.use_head_gates and row.variant not in BASELINES
        frames.append(log)
    return pd.concat(frames, ignore_index=True)


def eval_frames(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """<run>/eval/<name>.csv of every row of a `run_table`, with its label and seed; empty if none exist."""
    frames = []
    for row in rows.itertuples(index=False):
        path = Path(row.run_dir) / "eval" / f"{name}.csv"
        if path.is_file():
            frame = pd.read_csv(path)
            frame.insert(0, "seed", row.seed)
            frame.insert(0, "method", row.label)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_run_model(run_dir: str | Path):
    """(model in eval mode on the CPU, its TrainConfig) of a trained run."""
    from .checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    return load_checkpoint(run_dir / "model").model.eval(), TrainConfig.from_json(run_dir / "config.json")


def head_gate_maps(run_dir: str | Path) -> tuple[Any, Any]:
    """(evaluation gates, P(open)) of a run, both (blocks, heads) numpy arrays; all ones without gates."""
    import torch

    model, _ = load_run_model(run_dir)
    with torch.no_grad():
        gates = model.head_gates().float().numpy()
        probabilities = model.gate_open_probabilities().float()
    shape = gates.shape
    open_probability = probabilities.reshape(shape).numpy() if probabilities.numel() == gates.size else gates
    return gates, open_probability


def _dataset_of(cfg: TrainConfig, split: str):
    from .data import build_dataset, ensure_dataset

    return build_dataset(cfg.dataset, ensure_dataset(cfg.dataset, cfg.data_root), split,
                         image_size=cfg.image_size, augment=False, **dataset_options(cfg))


def sample_ids(run_dir: str | Path, *, split: str = "val", n: int = 4) -> list[str]:
    """The first `n` image ids of `split` that the run's evaluation wrote pseudo-masks for."""
    masks = sorted((Path(run_dir) / "eval" / "pseudo_masks" / split).glob("*.png"))
    if not masks:
        raise FileNotFoundError(f"{run_dir}/eval/pseudo_masks/{split}: no pseudo-masks; evaluate the run first")
    return [path.stem for path in masks[:n]]


def qualitative_samples(run_dirs: dict[str, str | Path], ids: Sequence[str], *, split: str = "val") -> dict[str, Any]:
    """Images, ground truth and each run's saved pseudo-mask for `ids` (all at the image's own size)."""
    import numpy as np
    from PIL import Image

    from .pseudo_masks import load_mask_png

    first = next(iter(run_dirs.values()))
    cfg = TrainConfig.from_json(Path(first) / "config.json")
    dataset = _dataset_of(cfg, split)
    index_of = {image_id: i for i, image_id in enumerate(dataset.ids)}
    images, truth, masks = [], [], {label: [] for label in run_dirs}
    for image_id in ids:
        image, mask = dataset.read_raw(index_of[image_id])
        images.append(image)
        truth.append(mask)
        for label, run_dir in run_dirs.items():
            pseudo = load_mask_png(Path(run_dir) / "eval" / "pseudo_masks" / split / f"{image_id}.png")
            if pseudo.shape != mask.shape:  # masks are made at the model's input size
                pseudo = np.asarray(Image.fromarray(pseudo).resize(mask.shape[::-1], Image.Resampling.NEAREST))
            masks[label].append(pseudo)
    return {"ids": list(ids), "images": images, "ground_truth": truth, "masks": masks,
            "has_background": dataset.has_background, "class_names": list(dataset.class_names)}


def class_maps_of(run_dir: str | Path, ids: Sequence[str], *, variant: str = "full",
                  split: str = "val") -> dict[str, Any]:
    """Per-class maps (N, C, H, W) of a run for `ids`, min-max normalised per map, at each image's size."""
    import numpy as np
    import torch

    from .evaluate import class_maps_for, parse_blocks

    model, cfg = load_run_model(run_dir)
    dataset = _dataset_of(cfg, split)
    index_of = {image_id: i for i, image_id in enumerate(dataset.ids)}
    blocks = parse_blocks(eval_blocks_for(variant, model.config.depth))
    images, maps, labels = [], [], []
    with torch.no_grad():
        for image_id in ids:
            item = dataset[index_of[image_id]]
            raw, _ = dataset.read_raw(index_of[image_id])
            output = model(item["image"][None], return_attention=model.config.classifier != "cam")
            class_maps = class_maps_for(model, output, tuple(raw.shape[:2]), blocks=blocks)[0]
            low = class_maps.flatten(1).min(1).values[:, None, None]
            high = class_maps.flatten(1).max(1).values[:, None, None]
            maps.append(((class_maps - low) / (high - low).clamp_min(1e-12)).numpy())
            images.append(raw)
            labels.append(item["labels"].numpy())
    return {"ids": list(ids), "images": images, "class_maps": np.stack(maps), "labels": np.stack(labels),
            "class_names": list(dataset.class_names)}


def gate_maps_for(rows: pd.DataFrame, *, seed: int | None = None,
                  prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """({prefix + label: gates}, {prefix + label: P(open)}) of the rows' runs for one seed (the first by default)."""
    seed = int(rows["seed"].iloc[0]) if seed is None else seed
    gates, probabilities = {}, {}
    for row in rows[rows["seed"] == seed].itertuples(index=False):
        gates[prefix + row.label], probabilities[prefix + row.label] = head_gate_maps(row.run_dir)
    return gates, probabilities


def training_summary(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per run: its last epoch's numbers, training time and checkpoint."""
    rows = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        log = pd.read_json(run_dir / "log.jsonl", lines=True)
        last = log.iloc[-1]
        cfg = TrainConfig.from_json(run_dir / "config.json")
        rows.append({"seed": cfg.seed, "epochs": int(last["epoch"]), "train_loss": float(last["train_loss"]),
                     "val_loss": float(last["val_loss"]), "classifier_acc": float(last["val_classifier_acc"]),
                     "sparsity": float(last["sparsity"]), "train_minutes": float(log["epoch_seconds"].sum()) / 60,
                     "checkpoint": str(run_dir / "model")})
    return pd.DataFrame(rows)


def data_overview(datasets: Sequence[str], *, data_root: str = "", splits: Sequence[str] = ("train", "val"),
                  max_images: int | None = None) -> dict[str, Any]:
    """Generate (embedded SYNTHETIC sets) or locate (real data) each dataset and summarise its splits.

    Returns {"summaries": {dataset: {split: dataset_summary}}, "table": one row per (dataset, split),
    "frequency": one row per (dataset, split, class), "cooccurrence": {dataset: (K, K) train counts},
    "datasets": {dataset: its train KyamDataset}}.
    """
    from .data import build_dataset, default_data_root, ensure_dataset
    from .data.summary import cooccurrence, dataset_summary

    root = Path(data_root) if data_root else default_data_root()
    summaries: dict[str, dict[str, Any]] = {}
    table, frequency, cooccurrences, train_sets = [], [], {}, {}
    for name in datasets:
        folder = ensure_dataset(name, root)
        summaries[name] = {}
        for split in splits:
            dataset = build_dataset(name, folder, split)
            summary = dataset_summary(dataset, max_images=max_images)
            summary["root"] = os.path.relpath(summary["root"])  # results carry no absolute paths
            summaries[name][split] = summary
            labels_per_image = summary["labels_per_image"]
            mean_labels = sum(int(k) * v for k, v in labels_per_image.items()) / max(summary["images"], 1)
            table.append({"dataset": name, "synthetic": name in SYNTHETIC_DATASETS, "split": split,
                          "images_in_split": summary["images_in_split"], "images_counted": summary["images"],
                          "classes": summary["num_classes"], "channels": summary["num_channels"],
                          "background": summary["has_background"], "labels_per_image": mean_labels,
                          "background_pixels": summary["pixel_fraction"].get("background"),
                          "ignore_pixels": summary["pixel_fraction"]["ignore"]})
            for class_name, count in summary["images_per_class"].items():
                frequency.append({"dataset": name, "split": split, "class": class_name, "images": count,
                                  "fraction": count / max(summary["images"], 1),
                                  "pixel_fraction": summary["pixel_fraction"][class_name]})
            if split == splits[0]:
                train_sets[name] = dataset
                cooccurrences[name] = cooccurrence(dataset, max_images=max_images)
    return {"summaries": summaries, "table": pd.DataFrame(table), "frequency": pd.DataFrame(frequency),
            "cooccurrence": cooccurrences, "datasets": train_sets}


# ---- downstream segmentation -----------------------------------------------------------------
def segmentation_config(preset: str, supervision: str, *, seed: int = 0, dataset: str = "shapes",
                        data_root: str = "", runs_dir: str | Path = "runs", **overrides: Any):
    """The SegConfig of the "pseudo" (pseudo-masks of the cached "full" run) or "full_supervision" model.

    Both models train on the same images — the first `train_images` of the full run's training
    images (`SEG_PRESETS`), whose pseudo-masks an evaluation of the full run writes under
    <run>/eval_segmentation (or <run>/eval when the scoring evaluation covers them) — with the classifier's data, image and patch size, but the
    segmentation preset's own optimisation settings: a segmenter trained from scratch with the
    classifier's lr and epochs collapses to all-background.
    """
    from .segmentation import GROUND_TRUTH, SegConfig

    if supervision not in ("pseudo", "full_supervision"):
        raise ValueError(f"supervision {supervision!r}: expected 'pseudo' or 'full_supervision'")
    settings = seg_preset_overrides(preset)
    train_images = settings.pop("train_images")
    run_dir = run_variant(preset, "full", seed=seed, dataset=dataset, data_root=data_root, runs_dir=runs_dir,
                          **overrides)
    # the scoring evaluation when it already covers those images, else one of its own
    cfg = TrainConfig.from_json(run_dir / "config.json")
    scored = "train" if cfg.train_split == "train_aug" else cfg.train_split
    eval_name = ("eval" if train_images == EVAL_MAX_IMAGES.get(preset, 0) and scored == cfg.train_split
                 else "eval_segmentation")
    summary = evaluate_variant(run_dir, "full", preset=preset, max_images=train_images, eval_name=eval_name,
                               train_split=cfg.train_split)
    masked_images = summary["splits"][cfg.train_split]["images"]
    split_size = len(_dataset_of(cfg, cfg.train_split))
    shared = {name: getattr(cfg, name) for name in (
        "dataset", "data_root", "train_split", "val_split", "image_size", "max_val_images", "num_workers",
        "model_size", "patch_size", "pretrained", "amp", "device", "seed", "deterministic")}
    masks = str(run_dir / eval_name / "pseudo_masks" / cfg.train_split) if supervision == "pseudo" else GROUND_TRUTH
    out_dir = Path(runs_dir) / run_family(preset) / dataset / f"seg_{supervision}_seed{seed}"
    return SegConfig(**{**shared, **settings}, masks=masks,
                     max_train_images=masked_images if masked_images < split_size else 0, out_dir=str(out_dir))


def run_segmentation(preset: str, supervision: str, *, seed: int = 0, dataset: str = "shapes", data_root: str = "",
                     runs_dir: str | Path = "runs", **overrides: Any) -> dict[str, Any]:
    """Train (or reuse) one segmentation model; returns its metrics.json. Retrains when its pseudo-masks changed."""
    from .segmentation import GROUND_TRUTH, train_segmentation

    cfg = segmentation_config(preset, supervision, seed=seed, dataset=dataset, data_root=data_root,
                              runs_dir=runs_dir, **overrides)
    for out_dir in _candidate_dirs(Path(cfg.out_dir)):
        metrics_file = out_dir / "metrics.json"
        same = _same_config(out_dir / "config.json", cfg)
        if same and metrics_file.is_file():
            masks_made = Path(cfg.masks).parent.parent / "metrics.json"
            if cfg.masks == GROUND_TRUTH or masks_made.stat().st_mtime <= metrics_file.stat().st_mtime:
                return read_json(metrics_file)
            continue  # trained on pseudo-masks that have since been remade: kept, and a new run goes beside it
        if same or not (out_dir / "config.json").exists():
            break
    print(f"training {out_dir}")
    return train_segmentation(cfg.replace(out_dir=str(out_dir)), resume=same, show_progress=False)


# ---- the notebooks' shared state -------------------------------------------------------------
SYNTHETIC_DATASETS: tuple[str, ...] = ("shapes", "regions")


@dataclasses.dataclass
class Session:
    """What every numbered notebook needs: the preset (smoke resolved), seeds, data, and where outputs go.

    Its methods run the cached experiments and write tables, figures and the notebook's metrics.json.
    """

    notebook: str
    preset: str
    seeds: list[int]
    dataset: str
    data_root: str
    results_dir: Path
    runs_dir: Path
    smoke: bool = False

    @property
    def synthetic(self) -> bool:
        return self.dataset in SYNTHETIC_DATASETS

    @property
    def ours_label(self) -> str:
        """How our rows are labelled beside the paper's, e.g. "ours (SYNTHETIC data, tiny ViT, quick preset)"."""
        size = preset_overrides(self.preset).get("model_size", TrainConfig().model_size)
        return f"ours ({'SYNTHETIC' if self.synthetic else 'real'} data, {size} ViT, {self.preset} preset)"

    def describe(self) -> str:
        data = (f"{self.dataset} — SYNTHETIC embedded data (generated on first use); numbers are not comparable "
                f"to the paper's" if self.synthetic else f"{self.dataset} (real data)")
        return (f"{self.notebook}: preset {self.preset!r}{' (smoke)' if self.smoke else ''}, seeds {self.seeds}\n"
                f"data: {data}\nruns: {self.runs_dir}\nresults: {self.results_dir}")

    def run_table(self, runs: Sequence[RunSpec | str], *, datasets: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of `run_table` for every run, seed and dataset (default: the session's dataset)."""
        train_runs(self.preset, runs, seeds=self.seeds, datasets=datasets or [self.dataset], data_root=self.data_root,
                   runs_dir=self.runs_dir)
        return pd.concat([run_table(self.preset, runs, seeds=self.seeds, dataset=dataset, data_root=self.data_root,
                                    runs_dir=self.runs_dir) for dataset in (datasets or [self.dataset])],
                         ignore_index=True)

    def evaluated_run(self, variant: str = "full", *, seed: int | None = None) -> Path:
        """The run dir of `variant` (first seed by default), trained and evaluated (pseudo-masks saved)."""
        run_dir = self.run_dir(variant, seed=seed)
        evaluate_variant(run_dir, variant, preset=self.preset)
        return run_dir

    def segmentation_table(self) -> pd.DataFrame:
        """One row per (supervision, seed): val mIoU and pixel accuracy of the downstream segmentation model."""
        rows = []
        for supervision in ("pseudo", "full_supervision"):
            for seed in self.seeds:
                metrics = run_segmentation(self.preset, supervision, seed=seed, dataset=self.dataset,
                                           data_root=self.data_root, runs_dir=self.runs_dir)
                rows.append({"supervision": supervision, "seed": seed, "miou": metrics["miou"],
                             "pixel_acc": metrics["pixel_acc"], "classifier_acc": None, "sparsity": None,
                             "train_images": metrics["train_images"], "val_images": metrics["val_images"],
                             "epochs": metrics["epochs"]})
        return pd.DataFrame(rows)

    def run_dir(self, variant: str = "full", *, seed: int | None = None, dataset: str | None = None,
                **overrides: Any) -> Path:
        return run_variant(self.preset, variant, seed=self.seeds[0] if seed is None else seed,
                           dataset=dataset or self.dataset, data_root=self.data_root, runs_dir=self.runs_dir,
                           **overrides)

    def save_table(self, frame: pd.DataFrame, name: str, caption: str, *, display: pd.DataFrame | None = None) -> None:
        """tables/<name>.csv and .md under results_dir (see `kyam_lib.report.save_table`)."""
        from .report import save_table

        save_table(frame, self.results_dir, name, caption=caption, notebook=self.notebook, display=display)

    def save_figure(self, fig, name: str, caption: str) -> None:
        """figures/<name>.png under results_dir; the figure is still shown in the notebook."""
        from .report import save_figure

        save_figure(fig, self.results_dir, name, caption=caption, notebook=self.notebook)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        from .report import write_notebook_metrics

        return write_notebook_metrics(self.results_dir, self.notebook, {
            "preset": self.preset, "seeds": self.seeds, "smoke": self.smoke, "dataset": self.dataset,
            "synthetic": self.synthetic, **metrics})


def session(notebook: str, *, preset: str = "quick", smoke: bool = False, seeds: Sequence[int] = (0,),
            dataset: str | None = "shapes", data_root: str = "", results_dir: str | Path = "../results",
            runs_dir: str | Path = "../runs") -> Session:
    """The Session of a notebook's parameters cell: smoke=True selects the "smoke" preset."""
    preset = "smoke" if smoke else preset
    preset_overrides(preset)  # names the preset on error
    seeds = [int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)]
    if not seeds:
        raise ValueError(f"{notebook}: seeds is empty")
    s = Session(notebook=notebook, preset=preset, seeds=seeds, dataset=dataset or "shapes", data_root=data_root,
                results_dir=Path(results_dir), runs_dir=Path(runs_dir), smoke=smoke)
    print(s.describe())
    return s
