"""What the numbered notebooks call: the `Session` of a notebook's parameters cell, and the downstream segmentation runs."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..config import TrainConfig
from ..io import read_json, write_json
from ..presets import preset_overrides, run_family, seg_preset_overrides
from ..segmentation import GROUND_TRUTH, INHERITED_DATA_FIELDS, SegConfig, train_segmentation
from .report import save_figure, save_table, write_notebook_metrics
from .runs import _candidate_dirs, _dataset_of, _record_placement, _resolve_data_root, _same_config, evaluate_variant, run_table, run_variant, train_runs
from .variants import EVAL_MAX_IMAGES, SYNTHETIC_DATASETS, RunSpec, compared_runs

__all__ = ["segmentation_config", "run_segmentation", "Session", "session"]


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
    # The run's data (the images below), its ViT's size, patch and initialisation, placement and seed.
    shared = {name: getattr(cfg, name) for name in (*INHERITED_DATA_FIELDS, "model_size", "patch_size", "pretrained",
                                                    "amp", "device", "seed", "deterministic")}
    masks = str(run_dir / eval_name / "pseudo_masks" / cfg.train_split) if supervision == "pseudo" else GROUND_TRUTH
    out_dir = Path(runs_dir) / run_family(preset) / dataset / f"seg_{supervision}_seed{seed}"
    return SegConfig(**{**shared, **settings}, masks=masks,
                     max_train_images=masked_images if masked_images < split_size else 0, out_dir=str(out_dir))


def run_segmentation(preset: str, supervision: str, *, seed: int = 0, dataset: str = "shapes", data_root: str = "",
                     runs_dir: str | Path = "runs", **overrides: Any) -> dict[str, Any]:
    """Train (or reuse) one segmentation model; returns its metrics.json. Retrains when its pseudo-masks changed."""
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

    def train_compared(self) -> list[Path]:
        """Train every run notebooks 03-05 compare on the session's dataset, for every seed — side by
        side where the CPU allows (`train_runs`), so that those notebooks read cached runs."""
        return train_runs(self.preset, compared_runs(), seeds=self.seeds, datasets=[self.dataset],
                          data_root=self.data_root, runs_dir=self.runs_dir)

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
        """tables/<name>.csv and .md under results_dir (see `kyam_lib.experiments.report.save_table`)."""
        save_table(frame, self.results_dir, name, caption=caption, notebook=self.notebook, display=display)

    def save_figure(self, fig, name: str, caption: str) -> None:
        """figures/<name>.png under results_dir; the figure is still shown in the notebook."""
        save_figure(fig, self.results_dir, name, caption=caption, notebook=self.notebook)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
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
