"""`make reproduce`: run the numbered notebooks headless with papermill, then write the report.

    python -m kyam_lib.experiments.reproduce --preset quick                  # default: one seed, ~15 min on 2 CPU cores
    python -m kyam_lib.experiments.reproduce --preset full                   # seeds 0 1 2, mean ± std everywhere
    python -m kyam_lib.experiments.reproduce --preset paper --dataset voc --data-root /data   # a GPU machine with real data

Executed notebooks go to results/notebooks/ (the sources in notebooks/ stay output-free); tables,
figures, summary.json and README.md are regenerated from scratch; trained runs are cached in
runs/, so a second call only re-executes the notebooks. The wall time of the whole call is
recorded in results/reproduce_timing.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..io import write_json
from .notebook_params import check_parameters
from ..presets import TRAIN_PRESETS
from .report import NOTEBOOKS, write_readme, write_summary

__all__ = ["REPO_ROOT", "DEFAULT_SEEDS", "notebook_paths", "notebook_parameters", "run", "main"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SEEDS: dict[str, list[int]] = {"full": [0, 1, 2]}  # every other preset: [0]
# What a fresh reproduce replaces in the results directory (anything else there is left alone).
GENERATED = ("tables", "figures", "notebooks", "catalog.json", "summary.json", "README.md")


def notebook_paths(notebooks_dir: str | os.PathLike = REPO_ROOT / "notebooks",
                   names: Sequence[str] = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks to execute, in order; raises naming the first one that is missing."""
    paths = [Path(notebooks_dir) / f"{name}.ipynb" for name in names]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: notebook not found")
    return paths


def _relative(path: Path, start: Path) -> str:
    """`path` relative to `start`, so that executed notebooks hold no absolute paths."""
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def notebook_parameters(*, preset: str, seeds: Sequence[int], results_dir: Path, runs_dir: Path, cwd: Path,
                        smoke: bool = False, dataset: str | None = None,
                        data_root: str | None = None) -> dict[str, Any]:
    """The papermill parameters every numbered notebook takes."""
    parameters: dict[str, Any] = {"preset": preset, "smoke": smoke, "seeds": [int(s) for s in seeds],
                                  "results_dir": _relative(results_dir, cwd), "runs_dir": _relative(runs_dir, cwd)}
    if dataset:
        parameters["dataset"] = dataset
    if data_root:
        parameters["data_root"] = str(Path(data_root).expanduser().resolve())
    return parameters


# Files under results/ that other tools write (the browser test's screenshot, the benchmarks).
KEPT = ("figures/attention_browser.png", "benchmarks.json", "benchmarks.md")


def _clean(results_dir: Path) -> None:
    kept = {results_dir / name for name in KEPT}
    for name in GENERATED:
        path = results_dir / name
        if path.is_dir() and not any(k.is_relative_to(path) for k in kept):
            shutil.rmtree(path)
        elif path.is_dir():
            for file in path.iterdir():
                if file in kept:
                    continue
                shutil.rmtree(file) if file.is_dir() else file.unlink()
        elif path.exists():
            path.unlink()


def run(*, preset: str = "quick", seeds: Sequence[int] | None = None, results_dir: str | os.PathLike = "results",
        runs_dir: str | os.PathLike = "runs", notebooks_dir: str | os.PathLike = REPO_ROOT / "notebooks",
        dataset: str | None = None, data_root: str | None = None, smoke: bool = False,
        log_output: bool = True) -> dict[str, Any]:
    """Execute notebooks 01–07 in order, then write summary.json, reproduce_timing.json and README.md."""
    import papermill  # imported here: slow to import, and only this driver needs it

    started = time.perf_counter()
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {sorted(TRAIN_PRESETS)}")
    seeds = list(seeds) if seeds else DEFAULT_SEEDS.get(preset, [0])
    results_dir, runs_dir, notebooks_dir = Path(results_dir), Path(runs_dir), Path(notebooks_dir)
    paths = notebook_paths(notebooks_dir)
    parameters = notebook_parameters(preset=preset, seeds=seeds, results_dir=results_dir, runs_dir=runs_dir,
                                     cwd=notebooks_dir, smoke=smoke, dataset=dataset, data_root=data_root)
    for path in paths:  # every notebook is checked before the first one runs
        check_parameters(path, parameters)
    _clean(results_dir)
    executed_dir = results_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    shown_preset = "smoke" if smoke else preset
    timings = {}
    # Progress bars would only clutter the executed notebooks; the kernels inherit this setting.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        for path in paths:
            print(f"[reproduce] {path.stem} ({shown_preset}, seeds {seeds}) ...", flush=True)
            notebook_started = time.perf_counter()
            # Relative paths: papermill records them in the executed notebook's metadata.
            papermill.execute_notebook(_relative(path, Path.cwd()), _relative(executed_dir / path.name, Path.cwd()),
                                       parameters=parameters,
                                       cwd=str(notebooks_dir), kernel_name="python3", progress_bar=False,
                                       log_output=log_output)
            timings[path.stem] = round(time.perf_counter() - notebook_started, 1)
            print(f"[reproduce] {path.stem} done in {timings[path.stem]:.0f} s", flush=True)
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    write_summary(results_dir, preset=shown_preset, seeds=seeds)
    seconds = time.perf_counter() - started
    timing = {"preset": shown_preset, "seeds": seeds, "seconds": round(seconds, 1), "notebooks": timings}
    write_json(results_dir / "reproduce_timing.json", timing)
    datasets = [dataset] if dataset else ["shapes", "regions"]
    write_readme(results_dir, preset=shown_preset, seeds=seeds, seconds=seconds, datasets=datasets)
    print(f"[reproduce] results in {results_dir} ({seconds / 60:.1f} min)", flush=True)
    return timing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.experiments.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=sorted(TRAIN_PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 for full, else 0")
    parser.add_argument("--dataset", help="one dataset for every notebook (default: the SYNTHETIC shapes and regions)")
    parser.add_argument("--data-root", help="data root (default: $KYAM_DATA_ROOT, else <repo>/data)")
    parser.add_argument("--results", default=str(REPO_ROOT / "results"), help="results directory")
    parser.add_argument("--runs", default=str(REPO_ROOT / "runs"), help="cache of trained runs")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, to check the pipeline in a few minutes")
    parser.add_argument("--quiet", action="store_true", help="do not stream the notebooks' outputs")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        run(preset=args.preset, seeds=args.seeds, results_dir=args.results, runs_dir=args.runs, dataset=args.dataset,
            data_root=args.data_root, smoke=args.smoke, log_output=not args.quiet)
    except Exception as err:  # a failed notebook: its executed copy under results/notebooks shows the cell
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
