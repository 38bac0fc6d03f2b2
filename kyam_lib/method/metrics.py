"""Evaluation metrics: one confusion matrix per split (mIoU, per-class IoU, pixel accuracy),
classifier accuracy, mean average precision and the head sparsity rate.

Conventions (chosen to give the same numbers as torchmetrics):
- Confusion matrix rows are target classes, columns predicted classes; pixels whose target is
  `ignore_index` are left out entirely.
- mIoU is the mean IoU over the classes that occur in the target or in the prediction of the whole
  split (a class absent from both has no defined IoU and is skipped), as
  MulticlassJaccardIndex(average="macro", ignore_index=255).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "ConfusionMatrix",
    "confusion_matrix",
    "valid_pixels",
    "classifier_accuracy",
    "mean_average_precision",
    "sparsity_rate",
]


def valid_pixels(target: Tensor, *, num_classes: int, ignore_index: int | None = 255, name: str = "target") -> Tensor:
    """Bool mask of pixels that count (target != ignore_index); raise on any other out-of-range value."""
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor of class indices, got {target.dtype}")
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    bad = valid & ((target < 0) | (target >= num_classes))
    if bad.any():
        value = int(target[bad][0])
        raise ValueError(
            f"{name}: value {value} is not a class index in 0..{num_classes - 1}"
            + (f" nor the ignore index {ignore_index}" if ignore_index is not None else ""))
    return valid


def confusion_matrix(pred: Tensor, target: Tensor, *, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """(K, K) int64 counts, rows = target, columns = prediction, for tensors of any (equal) shape."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.device != target.device:
        raise ValueError(f"pred and target must be on the same device, got {pred.device} and {target.device}")
    if pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool:
        raise TypeError(f"pred: expected an integer tensor of class indices, got {pred.dtype}")
    valid = valid_pixels(target, num_classes=num_classes, ignore_index=ignore_index, name="target")
    pred_valid = pred[valid]
    bad = (pred_valid < 0) | (pred_valid >= num_classes)
    if bad.any():
        raise ValueError(f"pred: value {int(pred_valid[bad][0])} is not a class index in 0..{num_classes - 1}")
    flat = target[valid].long() * num_classes + pred_valid.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates a (K, K) confusion matrix over a whole split, on the device of its inputs.

    Args:
        num_classes: K, including background where the dataset has one.
        ignore_index: target value left out of every count (None: none).
        device: where the matrix lives; None = the device of the first update (CPU before that).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, *, device: torch.device | str | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index: {ignore_index} collides with a class index in 0..{num_classes - 1}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = None if device is None else torch.zeros(num_classes, num_classes, dtype=torch.int64,
                                                              device=device)

    @classmethod
    def from_matrix(cls, matrix: Tensor, ignore_index: int | None = 255) -> ConfusionMatrix:
        """Wrap existing (K, K) counts (rows = target, columns = prediction), e.g. one entry of a t-curve."""
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix: expected a square (K, K) tensor, got shape {tuple(matrix.shape)}")
        cm = cls(int(matrix.shape[0]), ignore_index, device=matrix.device)
        cm._matrix = matrix.to(torch.int64).clone()
        return cm

    @property
    def matrix(self) -> Tensor:
        """(K, K) int64 counts, rows = target, columns = prediction."""
        if self._matrix is None:
            self._matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self._matrix

    def reset(self) -> None:
        self._matrix = torch.zeros_like(self.matrix)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predictions and targets (integer tensors of any equal shape)."""
        counts = confusion_matrix(pred, target, num_classes=self.num_classes, ignore_index=self.ignore_index)
        if self._matrix is None:
            self._matrix = counts
        else:
            self._matrix += counts.to(self._matrix.device)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (same classes and ignore index); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"merge: expected a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"merge: matrices differ (num_classes {self.num_classes} vs {other.num_classes}, "
                f"ignore_index {self.ignore_index} vs {other.ignore_index})")
        self._matrix = self.matrix + other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all processes when torch.distributed is initialised; returns self.

        With the NCCL backend the matrix must be on the GPU: pass `device` at construction so that
        ranks without any update hold a matrix on the right device too.
        """
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def _intersection_union(self) -> tuple[Tensor, Tensor]:
        matrix = self.matrix.double()
        intersection = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - intersection
        return intersection, union

    def per_class_iou(self) -> Tensor:
        """(K,) float64 IoU per class; NaN for a class absent from both target and prediction."""
        intersection, union = self._intersection_union()
        return torch.where(union > 0, intersection / union.clamp_min(1), torch.full_like(union, math.nan))

    def miou(self) -> float:
        """Mean IoU over the classes present in target or prediction (NaN if there are none)."""
        iou = self.per_class_iou()
        present = ~torch.isnan(iou)
        return float(iou[present].mean()) if present.any() else math.nan

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly (NaN if none were counted)."""
        total = int(self.matrix.sum())
        return float(self.matrix.diagonal().sum()) / total if total else math.nan

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-ready summary; NaN (absent class) becomes None."""
        names = [str(k) for k in range(self.num_classes)] if class_names is None else list(class_names)
        if len(names) != self.num_classes:
            raise ValueError(f"class_names: expected {self.num_classes} names, got {len(names)}")

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "miou": clean(self.miou()),
            "pixel_accuracy": clean(self.pixel_accuracy()),
            "per_class_iou": {name: clean(float(v)) for name, v in zip(names, self.per_class_iou())},
            "num_pixels": int(self.matrix.sum()),
        }


def _as_probabilities(scores: Tensor, from_logits: bool | None) -> Tensor:
    scores = scores.double()
    if from_logits is None:
        # Same rule as torchmetrics: values outside [0, 1] can only be logits.
        from_logits = bool(((scores < 0) | (scores > 1)).any())
    return scores.sigmoid() if from_logits else scores


def classifier_accuracy(
        logits_or_probs: Tensor,
        labels: Tensor,
        *,
        multi_label: bool = True,
        threshold: float = 0.5,
        from_logits: bool | None = None,
) -> float:
    """Classifier accuracy.

    Multi-label: the fraction of correct per-class decisions over all (image, class) pairs, a class
    being predicted when its probability is >= threshold (the rule that selects classes for
    pseudo-masks). `logits_or_probs` (N, C), `labels` (N, C) in {0, 1}. With `from_logits=None`, scores
    are taken as logits when any lies outside [0, 1].
    Single-label: top-1 accuracy; `labels` (N,) class indices or (N, C) one-hot.
    """
    if logits_or_probs.ndim != 2:
        raise ValueError(f"logits_or_probs: expected (N, C), got shape {tuple(logits_or_probs.shape)}")
    if not multi_label:
        if labels.ndim == 2:
            if labels.shape != logits_or_probs.shape:
                raise ValueError(f"labels: expected shape {tuple(logits_or_probs.shape)}, got {tuple(labels.shape)}")
            labels = labels.argmax(dim=1)
        elif labels.shape != logits_or_probs.shape[:1]:
            raise ValueError(f"labels: expected (N,) = ({logits_or_probs.shape[0]},) class indices, got {tuple(labels.shape)}")
        return float((logits_or_probs.argmax(dim=1) == labels.to(logits_or_probs.device)).double().mean())
    if labels.shape != logits_or_probs.shape:
        raise ValueError(f"labels: expected shape {tuple(logits_or_probs.shape)}, got {tuple(labels.shape)}")
    probs = _as_probabilities(logits_or_probs, from_logits)
    predicted = probs >= threshold
    return float((predicted == labels.to(predicted.device).bool()).double().mean())


def _average_precision(scores: Tensor, positives: Tensor) -> float:
    """AP of one class: sum over distinct score thresholds of (recall step) * precision."""
    order = torch.argsort(scores, descending=True, stable=True)
    scores, positives = scores[order], positives[order].double()
    true_pos = positives.cumsum(0)
    seen = torch.arange(1, len(scores) + 1, device=scores.device, dtype=torch.float64)
    # Tied scores form one threshold: only the last position of each run of equal scores counts.
    last_of_run = torch.ones_like(scores, dtype=torch.bool)
    last_of_run[:-1] = scores[1:] != scores[:-1]
    true_pos, seen = true_pos[last_of_run], seen[last_of_run]
    precision = true_pos / seen
    recall = true_pos / true_pos[-1]
    recall_step = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((recall_step * precision).sum())


def mean_average_precision(scores: Tensor, labels: Tensor) -> float:
    """Macro mean average precision over classes; classes with no positive in `labels` are skipped.

    Per-class AP equals torchmetrics' MultilabelAveragePrecision; its macro average differs only in
    counting a class without positives as AP 0, where kyam leaves it out (its AP is undefined).

    `scores` (N, C) probabilities or logits (AP depends only on their order), `labels` (N, C) in {0, 1}.
    Returns NaN when no class has a positive.
    """
    if scores.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels: expected two (N, C) tensors, got {tuple(scores.shape)} and {tuple(labels.shape)}")
    positives = labels.to(scores.device).bool()
    values = [_average_precision(scores[:, c].double(), positives[:, c])
              for c in range(scores.shape[1]) if positives[:, c].any()]
    return sum(values) / len(values) if values else math.nan


def sparsity_rate(head_gates: Tensor) -> float:
    """Fraction of heads whose evaluation gate is 0; `head_gates` (L, H_heads)."""
    if head_gates.ndim != 2 or head_gates.numel() == 0:
        raise ValueError(f"head_gates: expected a non-empty (L, H_heads) tensor, got shape {tuple(head_gates.shape)}")
    return float((head_gates == 0).double().mean())
