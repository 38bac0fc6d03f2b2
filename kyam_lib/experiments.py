"""The comparisons of the paper as TrainConfig overrides: ablations, baselines and sweeps.

Every variant is trained by the same loop on the same data for the same epochs, and evaluated by
the same pseudo-mask code; only the fields below differ. `eval_blocks` is the class-map block
selection used when evaluating the variant (see `kyam_lib.evaluate.EvalConfig.blocks`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["VARIANTS", "LAMBDAS", "MASK_RATES", "variant_overrides", "eval_blocks_for"]

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

LAMBDAS: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)
MASK_RATES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def variant_overrides(name: str) -> dict[str, Any]:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known variants: {sorted(VARIANTS)}")
    return dict(VARIANTS[name])


def eval_blocks_for(name: str, depth: int) -> str:
    """Block selection for a variant's class maps: all blocks for ours, the last quarter for MCTformer."""
    if name == "mctformer":
        return f"last:{max(1, -(-depth // 4))}"
    return "all"
