"""The paper's comparisons, run and reported: what the numbered notebooks call.

    variants        the compared variants, sweeps and their labels (pure data)
    runs            the run cache: train / evaluate a variant once, and read its results back
    session         a notebook's `Session`, and the downstream segmentation runs
    report          tables, figures, each notebook's metrics.json, results/summary.json and README.md
    plots           the figures
    reproduce       `python -m kyam_lib.experiments.reproduce`: every notebook, then the report
    notebook_params the notebooks' parameters cells checked against the config dataclasses
    crf_report      the dense-CRF comparison of notebook 03

The names below are re-exported so that notebooks write ``experiments.session(...)``.
"""
from .runs import (class_maps_of, data_overview, eval_frames, evaluate_variant, experiment_config, gate_maps_for,
                   head_gate_maps, learning_log, load_run_model, qualitative_samples, result_row, run_table,
                   run_variant, sample_ids, train_runs, training_log, training_summary)
from .session import Session, run_segmentation, segmentation_config, session
from .variants import (ABLATIONS, BASELINES, EVAL_MAX_IMAGES, LAMBDA_LABELS, LAMBDAS, MASK_RATE_LABELS, MASK_RATES,
                       SYNTHETIC_DATASETS, VARIANTS, RunSpec, eval_blocks_for, given, lambda_run, lambda_runs,
                       mask_rate_run, mask_rate_runs, variant_overrides)

__all__ = [
    "VARIANTS", "BASELINES", "ABLATIONS", "LAMBDAS", "MASK_RATES", "LAMBDA_LABELS", "MASK_RATE_LABELS",
    "EVAL_MAX_IMAGES", "RunSpec", "variant_overrides",
    "eval_blocks_for", "lambda_run", "mask_rate_run", "experiment_config", "train_runs", "run_variant", "evaluate_variant",
    "result_row", "run_table", "training_log", "learning_log", "eval_frames", "load_run_model", "head_gate_maps", "sample_ids",
    "qualitative_samples", "class_maps_of", "segmentation_config", "run_segmentation",
    "SYNTHETIC_DATASETS", "Session", "session", "lambda_runs", "mask_rate_runs", "given", "gate_maps_for",
    "training_summary", "data_overview",
]
