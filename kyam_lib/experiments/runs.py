"""The shared, cached runs behind the comparisons (`variants`), and what the notebooks read back from them.

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

import itertools
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..data import build_dataset, default_data_root, ensure_dataset
from ..data.summary import cooccurrence, dataset_summary
from ..evaluate import EvalConfig, class_maps_for, evaluate_run, parse_blocks
from ..io import read_json, write_json
from ..masks_io import load_mask_png
from ..method.model import model_size
from ..parallel import map_in_processes, parallel_jobs
from ..presets import preset_overrides, run_family, variant_preset_overrides
from ..protocol import PLACEMENT_FIELDS, computed_fields, resolve_train_split
from ..run_data import open_split
from ..train import train
from .variants import BASELINES, EVAL_MAX_IMAGES, SYNTHETIC_DATASETS, VARIANTS, RunSpec, eval_blocks_for, variant_overrides

__all__ = [
    "experiment_config", "train_runs", "run_variant", "evaluate_variant", "result_row", "run_table", "training_log",
    "learning_log", "eval_frames", "load_run_model", "head_gate_maps", "sample_ids", "qualitative_samples",
    "class_maps_of", "gate_maps_for", "training_summary", "data_overview",
]


def _config_values(preset: str, variant: str, *, seed: int, dataset: str, data_root: str,
                   overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(TrainConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} in the overrides of variant {variant!r}")
    return {**TrainConfig().to_dict(), **preset_overrides(preset, dataset), **variant_overrides(variant),
            **variant_preset_overrides(preset, variant),
            "dataset": dataset, "data_root": data_root, "seed": seed, **overrides}


def _resolve_data_root(data_root: str) -> str:
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
    calls, missing, threads, pending = [], [], [], set()
    for dataset in datasets:
        for spec in runs:
            spec = RunSpec(spec, spec) if isinstance(spec, str) else spec
            for seed in seeds:
                call = dict(preset=preset, variant=spec.variant, seed=seed, dataset=dataset, data_root=data_root,
                            runs_dir=str(runs_dir), **spec.overrides)
                calls.append(call)
                cfg, _ = resolve_train_split(experiment_config(**call))
                run_dir, finished, _ = _cached_run(cfg)
                # Two specs of one run (the lambda = 0.01 run is "full") go to one process: two
                # processes must never train into the same directory.
                if not finished and run_dir not in pending:
                    pending.add(run_dir)
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

    run_dir = Path(run_dir)
    train_cfg = TrainConfig.from_json(run_dir / "config.json")
    if max_images is None:
        max_images = EVAL_MAX_IMAGES.get(preset or "", 0)
    depth = model_size(train_cfg.model_size).depth
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
    """The whole of `split` (no subset), un-augmented: images are looked up by id."""
    return open_split(cfg, split)


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


