"""Results: tables (CSV + Markdown), figures (PNG), `summary.json` and the generated `README.md`.

The notebooks write every table and figure through `save_table` / `save_figure`, which record a
one-line caption in ``results/catalog.json``; each notebook's last cell writes its
``results/notebooks/<notebook>/metrics.json``. `write_summary` merges those into
``results/summary.json`` and `write_readme` renders ``results/README.md`` from the catalog — the
report is never written by hand.

    python -m kyam_lib.experiments.report --results results     # rebuild summary.json and README.md
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data import DATASET_NAMES
from ..io import atomic_write, read_json, write_json
from .variants import ABLATIONS as EXPERIMENT_ABLATIONS
from .variants import BASELINES, LAMBDA_LABELS, MASK_RATE_LABELS

__all__ = [
    "METRICS", "NOTEBOOKS", "PAPER_TABLE8", "PAPER_VOC_PSEUDO", "PAPER_ABLATION", "PAPER_SEGMENTATION",
    "SummaryError", "metric_leaf", "metric_block", "metric_blocks", "mean_std_table", "format_mean_std",
    "COMPARISON_COLUMNS", "PAPER_MAIN_COLUMNS", "PAPER_ABLATION_COLUMNS", "comparison_table", "seed_ratios",
    "segmentation_table", "SUMMARY_SOURCES", "main_block", "baseline_blocks", "lambda_blocks", "ablation_blocks",
    "mask_ratio_blocks", "segmentation_blocks",
    "display_table", "markdown_table", "save_table", "save_figure", "notebook_dir", "write_notebook_metrics",
    "paper_table8", "paper_voc_table", "paper_ablation_table", "paper_segmentation_table", "table8_layout",
    "build_summary", "validate_summary", "write_summary", "write_readme", "main",
]

# The four numbers of every summary entry, as fractions in [0, 1].
METRICS: tuple[str, ...] = ("miou", "pixel_acc", "classifier_acc", "sparsity")
NOTEBOOKS: tuple[str, ...] = ("01_data_prep", "02_training", "03_pseudo_masks", "04_lambda_sensitivity",
                              "05_ablations", "06_qualitative", "07_segmentation")
ABLATIONS: tuple[str, ...] = EXPERIMENT_ABLATIONS
BASELINE_NAMES: tuple[str, ...] = BASELINES
LAMBDA_KEYS: tuple[str, ...] = tuple(LAMBDA_LABELS.values())         # "0", "0.001", "0.01", "0.1"
MASK_RATIO_KEYS: tuple[str, ...] = tuple(MASK_RATE_LABELS.values())   # "0", "0.25", "0.5", "0.75", "1.0"
SEGMENTATION_KEYS: tuple[str, ...] = ("pseudo", "full_supervision")
# The entries of summary.json after "preset" and "seeds", in order, and the notebook whose
# metrics.json holds each one.
SUMMARY_SOURCES: dict[str, str] = {"main": "03_pseudo_masks", "ablations": "05_ablations",
                                   "baselines": "03_pseudo_masks", "lambda": "04_lambda_sensitivity",
                                   "mask_ratio": "05_ablations", "segmentation": "07_segmentation"}

# ---- the paper's numbers (percent), for side-by-side tables; never presented as ours --------------
# Supplement Table 8 (ViT-B): {dataset: {metric: [lambda 0, 0.001, 0.01, 0.1]}}
PAPER_TABLE8: dict[str, dict[str, list[float]]] = {
    "DFC2020": {"sparsity": [0, 46, 69, 78], "classifier_acc": [86.2, 86.2, 86.1, 84.2],
                "pixel_acc": [70.0, 71.1, 74.1, 72.9], "miou": [59.8, 64.3, 67.2, 65.5]},
    "EndoTect": {"sparsity": [0, 64, 79, 88], "classifier_acc": [84.5, 84.1, 84.0, 81.8],
                 "pixel_acc": [79.3, 79.2, 78.4, 76.0], "miou": [69.9, 69.8, 69.8, 68.6]},
    "ADE20K": {"sparsity": [0, 55, 60, 77], "classifier_acc": [93.5, 93.9, 94.1, 93.0],
               "pixel_acc": [47.7, 49.9, 51.8, 48.2], "miou": [37.3, 37.4, 38.2, 37.8]},
}
# Main paper, VOC 2012 pseudo-mask mIoU (train, val); a published summary, approximate.
PAPER_VOC_PSEUDO: dict[str, tuple[float | None, float | None]] = {
    "ours (paper)": (74.5, 73.7), "DuPL": (75.1, 73.5), "ToCo": (72.2, 70.5), "I/C-CTI": (73.7, None),
    "ViT-PCM+CRF": (71.4, 69.3), "ReCAM": (70.5, None), "AFA": (68.7, 66.5),
}
# Main paper ablation: segmentation mIoU (COCO val, VOC val).
PAPER_ABLATION: dict[str, tuple[float, float]] = {
    "full": (43.2, 72.7), "no_masking": (41.9, 71.6), "no_reg": (42.8, 72.3), "no_pruning": (41.7, 72.0),
}
# Main paper, segmentation trained on the pseudo-masks, and DFC2020 against full supervision.
PAPER_SEGMENTATION: list[dict[str, Any]] = [
    {"dataset": "VOC 2012 val", "supervision": "pseudo", "miou": 72.7},
    {"dataset": "VOC 2012 test", "supervision": "pseudo", "miou": 73.5},
    {"dataset": "COCO val", "supervision": "pseudo", "miou": 43.2},
    {"dataset": "DFC2020", "supervision": "pseudo (pseudo-mask mIoU)", "miou": 67.2},
    {"dataset": "DFC2020", "supervision": "full_supervision", "miou": 53.1},
]
PAPER_LABEL = "paper (ViT-B, real data)"
# Row titles of Table 8's layout (percent).
TABLE8_TITLES: dict[str, str] = {"sparsity": "sparsity %", "classifier_acc": "classifier acc %",
                                 "pixel_acc": "pixel acc %", "miou": "mIoU %"}


class SummaryError(ValueError):
    """summary.json (or a notebook's metrics.json) does not have the documented shape."""


# ---- aggregation over seeds ------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return value is not None and not isinstance(value, bool) and isinstance(value, (int, float, np.number)) \
        and math.isfinite(float(value))


def metric_leaf(values: Iterable[Any]) -> dict[str, Any] | None:
    """{"mean", "std", "n"} over seeds (sample std, 0 for one seed); None when no value applies."""
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return None
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def metric_block(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """M = {"miou", "pixel_acc", "classifier_acc", "sparsity"} over the rows (one row per seed)."""
    frame = pd.DataFrame(rows)
    return {name: metric_leaf(frame[name].tolist()) if name in frame else None for name in METRICS}


def metric_blocks(rows: pd.DataFrame, key: str, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """{value of `key`: M} for each group of rows; `keys` fixes the order (and checks that all exist)."""
    groups = {str(k): group for k, group in rows.groupby(key, sort=False)}
    order = list(keys) if keys is not None else list(groups)
    missing = [k for k in order if k not in groups]
    if missing:
        raise SummaryError(f"no rows with {key} = {missing}; got {sorted(groups)}")
    return {k: metric_block(groups[k]) for k in order}


def mean_std_table(rows: pd.DataFrame, by: str | Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """One row per group: <col>_mean, <col>_std, and n (rows per group), group order kept."""
    by = [by] if isinstance(by, str) else list(by)
    out = []
    for key, group in rows.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        record: dict[str, Any] = dict(zip(by, key))
        for column in columns:
            leaf = metric_leaf(group[column].tolist()) if column in group else None
            record[f"{column}_mean"] = leaf["mean"] if leaf else None
            record[f"{column}_std"] = leaf["std"] if leaf else None
        record["n"] = len(group)
        out.append(record)
    return pd.DataFrame(out)


def format_mean_std(mean: Any, std: Any = None, n: int = 1, *, percent: bool = True, digits: int = 1) -> str:
    """"51.2 ± 1.3" (percent of a fraction); "—" when missing; no ± for a single seed."""
    if not _finite(mean):
        return "—"
    scale = 100.0 if percent else 1.0
    text = f"{float(mean) * scale:.{digits}f}"
    if n > 1 and _finite(std):
        text += f" ± {float(std) * scale:.{digits}f}"
    return text


def display_table(stats: pd.DataFrame, *, keys: Sequence[str], columns: Mapping[str, str],
                  percent: bool = True) -> pd.DataFrame:
    """A printable table from `mean_std_table` output: key columns, then "mean ± std" per metric."""
    out = stats[list(keys)].copy()
    for column, title in columns.items():
        out[title] = [format_mean_std(m, s, n, percent=percent) for m, s, n in
                      zip(stats[f"{column}_mean"], stats[f"{column}_std"], stats["n"])]
    return out


# Columns of the comparison tables: row field → title (values are fractions, shown in percent).
COMPARISON_COLUMNS: dict[str, str] = {"miou": "mIoU val %", "miou_train": "mIoU train %",
                                      "pixel_acc": "pixel acc val %", "classifier_acc": "classifier acc val %",
                                      "chance_acc": "all-negative acc val %", "sparsity": "head sparsity %"}
PAPER_MAIN_COLUMNS: dict[str, dict[str, float]] = {
    "full": {"paper (VOC 2012, ViT-B): pseudo-mask mIoU val %": PAPER_VOC_PSEUDO["ours (paper)"][1],
             "paper (VOC 2012, ViT-B): pseudo-mask mIoU train %": PAPER_VOC_PSEUDO["ours (paper)"][0]},
}
PAPER_ABLATION_COLUMNS: dict[str, dict[str, float]] = {
    name: {"paper (COCO val, ViT-B): segmentation mIoU %": coco, "paper (VOC val, ViT-B): segmentation mIoU %": voc}
    for name, (coco, voc) in PAPER_ABLATION.items()
}


def comparison_table(rows: pd.DataFrame, *, by: str = "label", order: Sequence[str] | None = None,
                     columns: Mapping[str, str] = COMPARISON_COLUMNS,
                     paper: Mapping[str, Mapping[str, float]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, display) of rows grouped by `by`: mean/std/n per metric, then the paper's columns if given.

    numbers keeps fractions (CSV); display shows "mean ± std" in percent, the paper's values as printed.
    """
    stats = mean_std_table(rows, by, [c for c in columns if c in rows])
    if order is not None:
        stats = stats.set_index(by).loc[[k for k in order if k in set(stats[by])]].reset_index()
    display = display_table(stats, keys=[by], columns={c: t for c, t in columns.items() if f"{c}_mean" in stats})
    display.insert(1, "seeds", stats["n"].tolist())
    display = display.rename(columns={"label": "method"})
    paper_titles = list(dict.fromkeys(title for values in (paper or {}).values() for title in values))
    for title in paper_titles:
        values = [(paper or {}).get(str(key), {}).get(title) for key in stats[by]]
        stats[title] = values
        display[title] = [f"{v:.1f}" if v is not None else "—" for v in values]
    return stats, display


def seed_ratios(rows: pd.DataFrame, metric: str, numerator: str, denominator: str, *,
                by: str = "supervision") -> list[float]:
    """Per seed: rows[metric] of `numerator` over that of `denominator` (seeds where both exist and the
    denominator is positive)."""
    table = rows.pivot_table(index="seed", columns=by, values=metric)
    if numerator not in table or denominator not in table:
        return []
    pairs = table[[numerator, denominator]].dropna()
    return [float(a / b) for a, b in zip(pairs[numerator], pairs[denominator]) if b > 0]


def segmentation_table(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None]:
    """(numbers, display, mIoU ratio leaf): pseudo vs full supervision, plus a row "pseudo / full_supervision"."""
    columns = {"miou": "mIoU val %", "pixel_acc": "pixel acc val %"}
    numbers, shown = comparison_table(rows, by="supervision", order=list(SEGMENTATION_KEYS), columns=columns)
    ratios = {metric: metric_leaf(seed_ratios(rows, metric, "pseudo", "full_supervision")) for metric in columns}
    seeds = max((r["n"] for r in ratios.values() if r), default=0)
    ratio_row = {"supervision": "pseudo / full_supervision", "n": seeds}
    shown_row = {"supervision": ratio_row["supervision"], "seeds": ratio_row["n"]}
    for metric, title in columns.items():
        leaf = ratios[metric]
        ratio_row[f"{metric}_mean"] = leaf["mean"] if leaf else None
        ratio_row[f"{metric}_std"] = leaf["std"] if leaf else None
        shown_row[title] = format_mean_std(leaf["mean"], leaf["std"], leaf["n"]) if leaf else "—"
    numbers = pd.concat([numbers, pd.DataFrame([ratio_row])], ignore_index=True)
    shown = pd.concat([shown, pd.DataFrame([shown_row])], ignore_index=True)
    return numbers, shown, ratios["miou"]


# ---- the summary.json entries: each notebook records its own through these (see SUMMARY_SOURCES) ----
def main_block(rows: pd.DataFrame) -> dict[str, Any]:
    """summary["main"] (notebook 03): M of ours ("full") over its seeds."""
    return metric_block(rows[rows["label"] == "full"])


def baseline_blocks(rows: pd.DataFrame) -> dict[str, Any]:
    """summary["baselines"] (notebook 03): {baseline: M}, in BASELINE_NAMES order."""
    return metric_blocks(rows[rows["label"].isin(BASELINE_NAMES)], "label", BASELINE_NAMES)


def lambda_blocks(rows: pd.DataFrame) -> dict[str, Any]:
    """summary["lambda"] (notebook 04): {dataset: {lambda label: M}}."""
    return {str(dataset): metric_blocks(group, "label", LAMBDA_KEYS)
            for dataset, group in rows.groupby("dataset", sort=False)}


def ablation_blocks(rows: pd.DataFrame) -> dict[str, Any]:
    """summary["ablations"] (notebook 05): {ablation: M}, in ABLATIONS order."""
    return metric_blocks(rows, "label", ABLATIONS)


def mask_ratio_blocks(rows: pd.DataFrame) -> dict[str, Any]:
    """summary["mask_ratio"] (notebook 05): {masking ratio label: M}."""
    return metric_blocks(rows, "label", MASK_RATIO_KEYS)


def segmentation_blocks(rows: pd.DataFrame) -> dict[str, Any]:
    """summary["segmentation"] (notebook 07): {"pseudo": M, "full_supervision": M}."""
    return metric_blocks(rows, "supervision", SEGMENTATION_KEYS)


# ---- tables and figures ----------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub pipe table of `frame` (index dropped); floats with 4 significant digits, missing as "—"."""
    header = [_cell(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _catalog_path(results_dir: Path) -> Path:
    return results_dir / "catalog.json"


def _record(results_dir: Path, kind: str, name: str, path: Path, caption: str, notebook: str) -> None:
    catalog_file = _catalog_path(results_dir)
    catalog = read_json(catalog_file) if catalog_file.is_file() else {"tables": {}, "figures": {}}
    catalog[kind][name] = {"path": path.relative_to(results_dir).as_posix(), "caption": caption,
                           "notebook": notebook}
    write_json(catalog_file, catalog)


def _check_name(name: str) -> None:
    if not name or any(ch in name for ch in "/\\ ") or name.startswith("."):
        raise ValueError(f"table/figure name {name!r}: use letters, digits, '_' and '-' only")


def save_table(frame: pd.DataFrame, results_dir: str | os.PathLike, name: str, *, caption: str,
               notebook: str = "", display: pd.DataFrame | None = None) -> Path:
    """Write tables/<name>.csv (the numbers) and tables/<name>.md (`display`, else the same frame)."""
    _check_name(name)
    results_dir = Path(results_dir)
    csv_path, md_path = results_dir / "tables" / f"{name}.csv", results_dir / "tables" / f"{name}.md"
    with atomic_write(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_write(md_path) as tmp:
        tmp.write_text(markdown_table(frame if display is None else display))
    _record(results_dir, "tables", name, md_path, caption, notebook)
    return csv_path


def save_figure(fig, results_dir: str | os.PathLike, name: str, *, caption: str, notebook: str = "",
                dpi: int = 110) -> Path:
    """Write figures/<name>.png (atomically) and record its caption; the figure stays open for display."""
    _check_name(name)
    results_dir = Path(results_dir)
    path = results_dir / "figures" / f"{name}.png"
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    _record(results_dir, "figures", name, path, caption, notebook)
    return path


def notebook_dir(results_dir: str | os.PathLike, notebook: str) -> Path:
    """results/notebooks/<notebook>/: the notebook's metrics.json (its executed copy sits beside it)."""
    return Path(results_dir) / "notebooks" / notebook


def write_notebook_metrics(results_dir: str | os.PathLike, notebook: str, metrics: Mapping[str, Any]) -> Path:
    """The last cell of every notebook: results/notebooks/<notebook>/metrics.json."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; expected one of {list(NOTEBOOKS)}")
    path = notebook_dir(results_dir, notebook) / "metrics.json"
    write_json(path, {"notebook": notebook, **_jsonable(metrics)})
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value


# ---- the paper's tables ----------------------------------------------------------------------
def paper_table8() -> pd.DataFrame:
    """The paper's supplement Table 8 (percent), one row per (dataset, metric)."""
    rows = [{"source": PAPER_LABEL, "dataset": dataset, "metric": TABLE8_TITLES[metric],
             **{f"λ={lam}": value for lam, value in zip(LAMBDA_KEYS, values)}}
            for dataset, metrics in PAPER_TABLE8.items() for metric, values in metrics.items()]
    return pd.DataFrame(rows)


def table8_layout(rows: pd.DataFrame, *, source: str) -> pd.DataFrame:
    """Our lambda rows (dataset, label, metrics...) in Table 8's layout: (dataset, metric) × lambda, percent."""
    out = []
    for dataset, group in rows.groupby("dataset", sort=False):
        stats = mean_std_table(group, "label", list(METRICS))
        by_label = {str(label): i for i, label in enumerate(stats["label"])}
        for metric in ("sparsity", "classifier_acc", "pixel_acc", "miou"):
            record = {"source": source, "dataset": dataset, "metric": TABLE8_TITLES[metric]}
            for lam in LAMBDA_KEYS:
                i = by_label.get(lam)
                record[f"λ={lam}"] = None if i is None else format_mean_std(
                    stats[f"{metric}_mean"][i], stats[f"{metric}_std"][i], int(stats["n"][i]))
            out.append(record)
    return pd.DataFrame(out)


def paper_voc_table() -> pd.DataFrame:
    return pd.DataFrame([{"source": "paper (VOC 2012, ViT-B; approximate)", "method": name,
                          "miou_train": train, "miou_val": val} for name, (train, val) in PAPER_VOC_PSEUDO.items()])


def paper_ablation_table() -> pd.DataFrame:
    return pd.DataFrame([{"source": "paper (COCO/VOC, ViT-B; segmentation mIoU)", "variant": name,
                          "coco_val_miou": coco, "voc_val_miou": voc} for name, (coco, voc) in PAPER_ABLATION.items()])


def paper_segmentation_table() -> pd.DataFrame:
    return pd.DataFrame([{"source": PAPER_LABEL, **row} for row in PAPER_SEGMENTATION])


# ---- summary.json ----------------------------------------------------------------------------
def _check_block(block: Any, where: str) -> None:
    if not isinstance(block, Mapping) or set(block) != set(METRICS):
        raise SummaryError(f"{where}: expected the metrics {list(METRICS)}, got "
                           f"{sorted(block) if isinstance(block, Mapping) else block!r}")
    for name in METRICS:
        leaf = block[name]
        if leaf is None:
            continue
        if not isinstance(leaf, Mapping) or set(leaf) != {"mean", "std", "n"}:
            raise SummaryError(f"{where}.{name}: expected null or {{mean, std, n}}, got {leaf!r}")
        if not (_finite(leaf["mean"]) and 0.0 <= leaf["mean"] <= 1.0):
            raise SummaryError(f"{where}.{name}.mean: {leaf['mean']!r} is not a fraction in [0, 1]")
        if not (_finite(leaf["std"]) and leaf["std"] >= 0.0):
            raise SummaryError(f"{where}.{name}.std: {leaf['std']!r} is not a non-negative number")
        if isinstance(leaf["n"], bool) or not isinstance(leaf["n"], int) or leaf["n"] < 1:
            raise SummaryError(f"{where}.{name}.n: {leaf['n']!r} is not a positive integer")


def _check_group(group: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(group, Mapping) or list(group) != list(keys):
        raise SummaryError(f"{where}: expected keys {list(keys)}, got "
                           f"{list(group) if isinstance(group, Mapping) else group!r}")
    for key in keys:
        _check_block(group[key], f"{where}.{key}")


def validate_summary(summary: Any) -> None:
    """Raise SummaryError naming the first entry that departs from the documented shape."""
    top = ("preset", "seeds", *SUMMARY_SOURCES)
    if not isinstance(summary, Mapping) or list(summary) != list(top):
        raise SummaryError(f"summary: expected keys {list(top)}, got "
                           f"{list(summary) if isinstance(summary, Mapping) else summary!r}")
    if not isinstance(summary["preset"], str):
        raise SummaryError(f"summary.preset: expected a string, got {summary['preset']!r}")
    seeds = summary["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise SummaryError(f"summary.seeds: expected a non-empty list of integers, got {seeds!r}")
    _check_block(summary["main"], "summary.main")
    _check_group(summary["ablations"], ABLATIONS, "summary.ablations")
    _check_group(summary["baselines"], BASELINE_NAMES, "summary.baselines")
    lambdas = summary["lambda"]
    # The embedded data gives "shapes" and "regions"; the paper preset the real dataset it ran on.
    if not isinstance(lambdas, Mapping) or not lambdas or not set(lambdas) <= set(DATASET_NAMES):
        raise SummaryError(f"summary.lambda: expected dataset names among {list(DATASET_NAMES)}, got "
                           f"{list(lambdas) if isinstance(lambdas, Mapping) else lambdas!r}")
    for dataset, group in lambdas.items():
        _check_group(group, LAMBDA_KEYS, f"summary.lambda.{dataset}")
    _check_group(summary["mask_ratio"], MASK_RATIO_KEYS, "summary.mask_ratio")
    _check_group(summary["segmentation"], SEGMENTATION_KEYS, "summary.segmentation")


def _notebook_metrics(results_dir: Path, notebook: str) -> dict[str, Any]:
    path = notebook_dir(results_dir, notebook) / "metrics.json"
    if not path.is_file():
        raise SummaryError(f"{path}: missing — run notebook {notebook} first (make reproduce runs all of them)")
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise SummaryError(f"{path}: expected a JSON object")
    return metrics


def _part(metrics: Mapping[str, Any], key: str, notebook: str) -> Any:
    if key not in metrics:
        raise SummaryError(f"{notebook}/metrics.json: has no {key!r} entry (keys: {sorted(metrics)})")
    return metrics[key]


def build_summary(results_dir: str | os.PathLike, *, preset: str, seeds: Sequence[int]) -> dict[str, Any]:
    """summary.json from the notebooks' metrics.json files (03, 04, 05, 07), validated."""
    results_dir = Path(results_dir)
    metrics = {notebook: _notebook_metrics(results_dir, notebook)
               for notebook in NOTEBOOKS if notebook in SUMMARY_SOURCES.values()}
    summary = {"preset": preset, "seeds": [int(s) for s in seeds],
               **{key: _part(metrics[notebook], key, notebook) for key, notebook in SUMMARY_SOURCES.items()}}
    validate_summary(summary)
    return summary


def write_summary(results_dir: str | os.PathLike, *, preset: str, seeds: Sequence[int]) -> dict[str, Any]:
    summary = build_summary(results_dir, preset=preset, seeds=seeds)
    write_json(Path(results_dir) / "summary.json", summary)
    return summary


# ---- README.md -------------------------------------------------------------------------------
def _headline(summary: Mapping[str, Any] | None) -> list[str]:
    if not summary:
        return []

    def pct(block: Mapping[str, Any] | None, name: str) -> str:
        leaf = (block or {}).get(name)
        return "—" if not leaf else format_mean_std(leaf["mean"], leaf["std"], leaf["n"])

    lines = ["## Headline numbers (val split, percent, mean ± std over seeds)", "",
             "| | pseudo-mask mIoU | pixel acc | classifier acc | head sparsity |", "|---|---|---|---|---|"]
    entries = [("ours (full)", summary["main"])] + [(f"baseline: {k}", v) for k, v in summary["baselines"].items()]
    entries += [(f"segmentation: {k}", v) for k, v in summary["segmentation"].items()]
    for label, block in entries:
        lines.append(f"| {label} | " + " | ".join(pct(block, m) for m in METRICS) + " |")
    return lines + [""]


def write_readme(results_dir: str | os.PathLike, *, preset: str, seeds: Sequence[int],
                 seconds: float | None = None, datasets: Sequence[str] = ("shapes", "regions")) -> Path:
    """results/README.md: every catalogued table (inline) and figure, each with its caption."""
    results_dir = Path(results_dir)
    catalog_file = _catalog_path(results_dir)
    catalog = read_json(catalog_file) if catalog_file.is_file() else {"tables": {}, "figures": {}}
    summary_file = results_dir / "summary.json"
    summary = read_json(summary_file) if summary_file.is_file() else None
    synthetic = [d for d in datasets if d in ("shapes", "regions")]
    lines = [
        "# kyam results",
        "",
        "*Generated by `kyam_lib.experiments.report` from the executed notebooks; do not edit by hand.*",
        "",
        f"- preset: **{preset}**; seeds: **{', '.join(str(s) for s in seeds)}** "
        f"({'mean ± std over seeds' if len(seeds) > 1 else 'one seed, no spread'})",
    ]
    if synthetic:
        lines.append(f"- data: **SYNTHETIC** ({', '.join(synthetic)}: the embedded generated sets, in the VOC and "
                     "DFC2020 formats). Our numbers on it are not comparable to the paper's.")
    if seconds is not None:
        lines.append(f"- wall time of the `make reproduce` that wrote these results: {seconds / 60:.1f} min; runs already "
                     "in the run cache are reused, not retrained, so this is not a from-scratch time "
                     "(`benchmarks.json` holds the quick reproduce time from a fresh clone)")
    lines += [
        f"- columns or rows marked **{PAPER_LABEL}** (or another \"paper (…)\" label) are the paper's reported "
        "numbers on real data with ViT-B, printed for comparison; they are never ours.",
        "- mIoU is pseudo-mask mIoU on the val split unless a column says train; all numbers are percent.",
        "- `summary.json` holds the same numbers as fractions, machine-readable.",
        "",
    ]
    lines += _headline(summary)
    by_notebook: dict[str, list[tuple[str, str, dict]]] = {}
    for kind in ("tables", "figures"):
        for name, entry in catalog.get(kind, {}).items():
            by_notebook.setdefault(entry.get("notebook", ""), []).append((kind, name, entry))
    order = [nb for nb in NOTEBOOKS if nb in by_notebook] + sorted(set(by_notebook) - set(NOTEBOOKS))
    for notebook in order:
        executed = results_dir / "notebooks" / f"{notebook}.ipynb"
        lines += [f"## {notebook or 'other'}", ""]
        if executed.is_file():
            lines += [f"Executed notebook: [`notebooks/{notebook}.ipynb`](notebooks/{notebook}.ipynb)", ""]
        for kind, name, entry in by_notebook[notebook]:
            lines += [f"**{name}** — {entry['caption']}", ""]
            path = results_dir / entry["path"]
            if kind == "tables":
                lines += [path.read_text().rstrip() if path.is_file() else f"*(missing: {entry['path']})*", "",
                          f"([CSV](tables/{name}.csv))", ""]
            else:
                lines += [f"![{name}]({entry['path']})", ""]
    path = results_dir / "README.md"
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results directory (default: results)")
    parser.add_argument("--preset", help="preset name (default: from results/summary.json or timing)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: from results/summary.json)")
    args = parser.parse_args(argv)
    results_dir = Path(args.results)
    recorded: dict[str, Any] = {}
    for name in ("summary.json", "reproduce_timing.json"):
        if (results_dir / name).is_file() and not recorded:
            recorded = read_json(results_dir / name)
    preset, seeds = args.preset or recorded.get("preset"), args.seeds or recorded.get("seeds")
    if not preset or not seeds:
        print("error: give --preset and --seeds (no summary.json to read them from)", file=sys.stderr)
        return 2
    try:
        write_summary(results_dir, preset=preset, seeds=seeds)
    except SummaryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    timing = results_dir / "reproduce_timing.json"
    seconds = read_json(timing).get("seconds") if timing.is_file() else None
    print(write_readme(results_dir, preset=preset, seeds=seeds, seconds=seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
