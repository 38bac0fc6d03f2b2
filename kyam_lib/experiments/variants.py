"""The comparisons of the paper as TrainConfig overrides: pure data, no I/O.

Every variant is trained by the same loop on the same data for the same epochs, and evaluated by
the same pseudo-mask code; only the fields below differ. `eval_blocks` is the class-map block
selection used when evaluating the variant (see `kyam_lib.evaluate.EvalConfig.blocks`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..config import TrainConfig

__all__ = [
    "VARIANTS", "BASELINES", "ABLATIONS", "LAMBDAS", "MASK_RATES", "LAMBDA_LABELS", "MASK_RATE_LABELS",
    "EVAL_MAX_IMAGES", "RunSpec", "variant_overrides", "eval_blocks_for", "lambda_run", "mask_rate_run",
    "lambda_runs", "mask_rate_runs", "compared_runs", "given", "SYNTHETIC_DATASETS",
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


def compared_runs() -> list[RunSpec]:
    """Every run notebooks 03-05 compare on one dataset: ours and the baselines, the ablations, the
    lambda and mask-rate sweeps (one run may appear twice: lambda 0.01 is "full"; `train_runs` trains it once)."""
    return ([RunSpec(name, name) for name in ("full", *BASELINES, *ABLATIONS)] + lambda_runs()
            + mask_rate_runs())


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None: a notebook's TrainConfig parameters left at None keep the preset's value."""
    unknown = sorted(set(fields) - set(TrainConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}")
    return {name: value for name, value in fields.items() if value is not None}


SYNTHETIC_DATASETS: tuple[str, ...] = ("shapes", "regions")
