"""Figures of the notebooks (matplotlib + seaborn). Each function takes plain data and returns a Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..data.palette import colorize
from ..method.pseudo_masks import heatmap_overlay

__all__ = ["training_curves", "threshold_curve", "per_class_iou", "gate_maps", "sweep", "class_frequency",
           "cooccurrence_heatmap", "qualitative_rows", "attention_maps", "segmentation_bars", "mask_colours"]

IGNORE_INDEX = 255


def _to_display(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] from uint8 or float images."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return np.clip(image.astype(np.float64), 0.0, 1.0)


def mask_colours(mask: np.ndarray, *, has_background: bool) -> np.ndarray:
    """(H, W, 3) uint8 palette colours; without background, class 0 is shifted off the black index 0."""
    mask = np.asarray(mask).astype(np.int64)
    if not has_background:
        mask = np.where(mask == IGNORE_INDEX, IGNORE_INDEX, mask + 1)
    return colorize(mask)


def training_curves(log: pd.DataFrame) -> plt.Figure:
    """Loss, classifier accuracy and head sparsity per epoch; one line per seed (column "seed")."""
    panels = [("loss", ["train_loss", "val_loss"]), ("classifier accuracy", ["val_classifier_acc"]),
              ("head sparsity", ["sparsity"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    frame = log.copy()
    if "seed" not in frame:
        frame["seed"] = 0
    for ax, (title, columns) in zip(axes, panels):
        long = frame.melt(id_vars=["epoch", "seed"], value_vars=[c for c in columns if c in frame],
                          var_name="series", value_name="value")
        sns.lineplot(data=long, x="epoch", y="value", hue="series", units="seed", estimator=None, ax=ax,
                     marker="o", markersize=3)
        ax.set_title(title)
        ax.set_ylabel("")
        if title != "loss":
            ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    return fig


def learning_curves(log: pd.DataFrame, *, hue: str = "label") -> plt.Figure:
    """Val classifier accuracy (left) and head sparsity (right) per epoch of every run in `log`
    (columns epoch, seed, `hue`, val_classifier_acc, val_chance_acc, sparsity, gates_held_open).

    The dashed line is the all-negative rate: a run on it has learned nothing. Epochs whose gates
    were held open (the L0 warm-up) are shaded; sparsity is drawn only for runs with gates.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = list(dict.fromkeys(log[hue]))
    colours = dict(zip(names, sns.color_palette(n_colors=len(names))))  # one colour per run in both panels
    sns.lineplot(data=log, x="epoch", y="val_classifier_acc", hue=hue, units="seed", estimator=None,
                 marker="o", markersize=3, ax=axes[0], palette=colours)
    chance = float(log["val_chance_acc"].mean()) if "val_chance_acc" in log else None
    if chance is not None:
        axes[0].axhline(chance, color="0.4", linestyle="--", linewidth=1)
        axes[0].annotate("all-negative rate", (log["epoch"].min(), chance), xytext=(2, 3),
                         textcoords="offset points", fontsize=8, color="0.3")
    axes[0].set_title("val classifier accuracy")
    gated = log[log.get("gated", True)] if "gated" in log else log
    if len(gated):
        sns.lineplot(data=gated, x="epoch", y="sparsity", hue=hue, units="seed", estimator=None,
                     marker="o", markersize=3, ax=axes[1], palette={k: colours[k] for k in dict.fromkeys(gated[hue])})
    axes[1].set_title("head sparsity (runs with gates)")
    axes[1].set_ylim(-0.02, 1.02)
    held = log.loc[log.get("gates_held_open", False) == True, "epoch"] if "gates_held_open" in log else []  # noqa: E712
    for ax in axes:
        ax.set_ylabel("")
        if len(held):
            ax.axvspan(0.5, float(max(held)) + 0.5, color="0.9", zorder=0)
    axes[1].text(0.02, 0.95, "shaded: gates held open (L0 warm-up)", transform=axes[1].transAxes, fontsize=8,
                 va="top", color="0.3")
    for ax in axes:
        if ax.get_legend() is not None:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def threshold_curve(curve: pd.DataFrame, *, best: float | None = None) -> plt.Figure:
    """mIoU and pixel accuracy against the background score t, per split (mean ± sd over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
    for ax, metric in zip(axes, ("miou", "pixel_acc")):
        sns.lineplot(data=curve, x="background_score", y=metric, hue="split", errorbar="sd", marker="o",
                     markersize=3, ax=ax)
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"chosen t = {best:g}")
            ax.legend(fontsize=8)
        ax.set_xlabel("background score t")
        ax.set_ylabel({"miou": "mIoU", "pixel_acc": "pixel accuracy"}[metric])
    fig.tight_layout()
    return fig


def per_class_iou(frame: pd.DataFrame) -> plt.Figure:
    """Bars of per-class IoU (columns class, iou, method), mean over seeds with sd error bars."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * frame["class"].nunique() + 2), 3.4))
    sns.barplot(data=frame, x="class", y="iou", hue="method", errorbar="sd", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.set_ylabel("IoU (val)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def gate_maps(open_probability: Mapping[str, np.ndarray], gates: Mapping[str, np.ndarray] | None = None,
              *, title: str = "") -> plt.Figure:
    """One (blocks × heads) heat map per label: P(open) in colour, an ✕ on every pruned head (gate 0)."""
    labels = list(open_probability)
    fig, axes = plt.subplots(1, len(labels), figsize=(2.4 * len(labels) + 1, 3.0), squeeze=False)
    for ax, label in zip(axes[0], labels):
        matrix = np.asarray(open_probability[label], dtype=np.float64)
        sns.heatmap(matrix, vmin=0, vmax=1, cmap="viridis", cbar=False, square=True, ax=ax,
                    linewidths=0.5, linecolor="white")
        if gates is not None and label in gates:
            for block, head in zip(*np.nonzero(np.asarray(gates[label]) == 0)):
                ax.text(head + 0.5, block + 0.5, "✕", ha="center", va="center", color="white", fontsize=9)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("block" if ax is axes[0, 0] else "")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.colorbar(axes[0, 0].collections[0], ax=list(axes[0]), label="P(open)", shrink=0.8)
    return fig


def sweep(frame: pd.DataFrame, *, x: str, metrics: Mapping[str, str], hue: str | None = None,
          xlabel: str | None = None) -> plt.Figure:
    """Metrics (fractions) against a swept setting, mean ± sd over seeds; `metrics` maps column → title."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, (column, title) in zip(axes[0], metrics.items()):
        data = frame.dropna(subset=[column])
        if not data.empty:
            sns.lineplot(data=data, x=x, y=column, hue=hue, errorbar="sd", marker="o", ax=ax)
        ax.set_title(title)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel("")
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    return fig


def class_frequency(frame: pd.DataFrame) -> plt.Figure:
    """Fraction of images containing each class (columns dataset, split, class, fraction)."""
    datasets = list(dict.fromkeys(frame["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sns.barplot(data=frame[frame["dataset"] == dataset], x="class", y="fraction", hue="split", ax=ax)
        ax.set_title(f"{dataset}: images containing each class")
        ax.set_xlabel("")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=40)
    fig.tight_layout()
    return fig


def cooccurrence_heatmap(counts: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Class co-occurrence as P(column class | row class): counts over the diagonal of its row."""
    diagonal = np.diag(counts.to_numpy()).astype(np.float64)
    conditional = counts.to_numpy() / np.maximum(diagonal[:, None], 1.0)
    fig, ax = plt.subplots(figsize=(0.6 * len(counts) + 2.5, 0.6 * len(counts) + 1.5))
    sns.heatmap(pd.DataFrame(conditional, index=counts.index, columns=counts.columns), vmin=0, vmax=1,
                annot=len(counts) <= 10, fmt=".2f", cmap="mako", square=True, ax=ax)
    ax.set_title(title or "P(column class | row class)", fontsize=9)
    fig.tight_layout()
    return fig


def qualitative_rows(images: Sequence[np.ndarray], columns: Mapping[str, Sequence[np.ndarray]], *,
                     has_background: bool, row_titles: Sequence[str] | None = None) -> plt.Figure:
    """One row per image: the image, then one mask per column (e.g. ground truth, ours, baselines)."""
    n_cols = 1 + len(columns)
    fig, axes = plt.subplots(len(images), n_cols, figsize=(1.9 * n_cols, 1.9 * len(images)), squeeze=False)
    for row, image in enumerate(images):
        axes[row, 0].imshow(_to_display(image))
        if row_titles is not None:
            axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
        for col, (name, masks) in enumerate(columns.items(), start=1):
            axes[row, col].imshow(mask_colours(masks[row], has_background=has_background), interpolation="nearest")
            if row == 0:
                axes[row, col].set_title(name, fontsize=9)
        if row == 0:
            axes[row, 0].set_title("image", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def attention_maps(images: Sequence[np.ndarray], class_maps: np.ndarray, class_names: Sequence[str],
                   *, labels: np.ndarray | None = None, row_titles: Sequence[str] | None = None) -> plt.Figure:
    """Per-class attention maps over each image: rows = images, columns = the image then each class.

    class_maps: (N, C, H, W). Titles of the classes present in the image (`labels` (N, C)) are bold.
    """
    n, num_classes = class_maps.shape[:2]
    fig, axes = plt.subplots(n, num_classes + 1, figsize=(1.7 * (num_classes + 1), 1.8 * n), squeeze=False)
    for row in range(n):
        picture = _to_display(images[row])
        axes[row, 0].imshow(picture)
        if row_titles is not None:
            axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
        for c in range(num_classes):
            ax = axes[row, c + 1]
            ax.imshow(heatmap_overlay(picture, class_maps[row, c], alpha=0.55))
            present = labels is not None and labels[row, c] > 0
            ax.set_title(class_names[c], fontsize=7, fontweight="bold" if present else "normal")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def segmentation_bars(frame: pd.DataFrame) -> plt.Figure:
    """Val mIoU and pixel accuracy of the segmentation models (columns supervision, miou, pixel_acc)."""
    long = frame.melt(id_vars=["supervision"], value_vars=["miou", "pixel_acc"], var_name="metric")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.barplot(data=long, x="metric", y="value", hue="supervision", errorbar="sd", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.set_ylabel("val")
    fig.tight_layout()
    return fig
