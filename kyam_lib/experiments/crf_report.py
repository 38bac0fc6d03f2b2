"""Ours with and without dense-CRF refinement, for the pseudo-mask notebook.

Each run is evaluated once more with `crf=True` (same settings as its cached evaluation, written
under ``<run>/eval_crf``), which scores the masks at the chosen t both plain and CRF-refined.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from kyam_lib.config import ConfigError
from kyam_lib.crf import crf_available
from kyam_lib.evaluate import EvalConfig, evaluate_run
from kyam_lib.io import read_json
from kyam_lib.experiments.report import mean_std_table

__all__ = ["crf_available", "crf_comparison"]


def _cached(cfg: EvalConfig) -> dict | None:
    out = Path(cfg.out_dir)
    try:
        same = EvalConfig.from_json(out / "config.json").to_dict() == cfg.to_dict()
    except (ConfigError, FileNotFoundError, ValueError):
        return None
    return read_json(out / "metrics.json") if same and (out / "metrics.json").is_file() else None


def crf_comparison(rows: pd.DataFrame, label: str = "full") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-seed rows, mean ± sd table) of mIoU and pixel accuracy without and with CRF, per split.

    `rows` is a `run_table`; runs of `label` whose dataset has no background are left out (the CRF
    refines the background rule). Both frames are empty when none is left.
    """
    records = []
    for row in rows[rows["label"] == label].itertuples(index=False):
        run_dir = Path(row.run_dir)
        base = EvalConfig.from_json(run_dir / "eval" / "config.json")
        cfg = base.replace(crf=True, save_masks=False, out_dir=str(run_dir / "eval_crf"))
        summary = _cached(cfg)
        if summary is None:
            if not read_json(run_dir / "eval" / "metrics.json")["has_background"]:
                continue
            summary = evaluate_run(cfg)
        for split, entry in summary["splits"].items():
            common = {"method": label, "seed": row.seed, "split": split}
            records.append({**common, "crf": "without", "miou": entry["miou"], "pixel_acc": entry["pixel_acc"],
                            "seconds_per_image": 0.0})
            records.append({**common, "crf": "with", "miou": entry["crf_miou"], "pixel_acc": entry["crf_pixel_acc"],
                            "seconds_per_image": entry["crf_seconds_per_image"]})
    per_seed = pd.DataFrame(records)
    if per_seed.empty:
        return per_seed, per_seed
    return per_seed, mean_std_table(per_seed, ["split", "crf"], ["miou", "pixel_acc", "seconds_per_image"])
