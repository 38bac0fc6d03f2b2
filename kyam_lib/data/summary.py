"""Dataset statistics and figures for the data-prep notebook, and a command line:

    python -m kyam_lib.data.summary --dataset shapes --root data --split train
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import pandas as pd

from . import DATASET_NAMES, build_dataset, default_data_root, ensure_dataset
from .base import IGNORE_INDEX, KyamDataset
from .palette import colorize

__all__ = ["dataset_summary", "cooccurrence", "sample_grid_figure", "format_summary", "main"]


def _indices(dataset: KyamDataset, max_images: int | None, seed: int) -> np.ndarray:
    if max_images is None or max_images >= len(dataset):
        return np.arange(len(dataset))
    return np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_images, replace=False))


def dataset_summary(dataset: KyamDataset, *, max_images: int | None = None, seed: int = 0) -> dict:
    """Counts over the untransformed masks and labels of `dataset` (a seeded subset if `max_images`).

    Returns a JSON-serialisable dict: images, classes, images_per_class, pixel_fraction (per
    class, plus "background" where it exists and "ignore"), labels_per_image histogram,
    image sizes (min/max height and width).
    """
    indices = _indices(dataset, max_images, seed)
    offset = 1 if dataset.has_background else 0
    pixel_counts = np.zeros(dataset.num_mask_classes, dtype=np.int64)
    ignore = total = 0
    images_per_class = np.zeros(dataset.num_classes, dtype=np.int64)
    per_image: Counter = Counter()
    heights, widths = [], []
    for index in indices:
        mask = dataset.read_mask(int(index))
        labels = dataset.image_labels(int(index), mask)
        valid = mask[mask != IGNORE_INDEX]
        pixel_counts += np.bincount(valid.ravel(), minlength=dataset.num_mask_classes)[: dataset.num_mask_classes]
        ignore += mask.size - valid.size
        total += mask.size
        images_per_class += labels > 0
        per_image[int((labels > 0).sum())] += 1
        heights.append(mask.shape[0])
        widths.append(mask.shape[1])
    fractions = {name: float(pixel_counts[k + offset] / max(total, 1)) for k, name in enumerate(dataset.class_names)}
    if dataset.has_background:
        fractions = {"background": float(pixel_counts[0] / max(total, 1)), **fractions}
    fractions["ignore"] = float(ignore / max(total, 1))
    return {
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "split": dataset.split,
        "root": str(dataset.root),
        "images": int(len(indices)),
        "images_in_split": len(dataset),
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "has_background": dataset.has_background,
        "multi_label": dataset.multi_label,
        "num_channels": dataset.num_channels,
        "images_per_class": {name: int(n) for name, n in zip(dataset.class_names, images_per_class)},
        "pixel_fraction": fractions,
        "labels_per_image": {str(k): int(per_image[k]) for k in sorted(per_image)},
        "image_size": {"min_hw": [int(min(heights)), int(min(widths))], "max_hw": [int(max(heights)), int(max(widths))]},
    }


def cooccurrence(dataset: KyamDataset, *, max_images: int | None = None, seed: int = 0) -> pd.DataFrame:
    """(K, K) images containing both classes; the diagonal is images per class."""
    labels = np.stack([dataset.image_labels(int(i)) for i in _indices(dataset, max_images, seed)]) > 0
    counts = labels.T.astype(np.int64) @ labels.astype(np.int64)
    return pd.DataFrame(counts, index=dataset.class_names, columns=dataset.class_names)


def sample_grid_figure(dataset: KyamDataset, n: int = 8, *, seed: int = 0):
    """A matplotlib Figure: n seeded samples, image above its mask (VOC palette; ignore white)."""
    import matplotlib.pyplot as plt

    indices = _indices(dataset, min(n, len(dataset)), seed)
    fig, axes = plt.subplots(2, len(indices), figsize=(1.8 * len(indices), 4.0), squeeze=False)
    offset = 1 if dataset.has_background else 0
    for column, index in enumerate(indices):
        image, mask = dataset.read_raw(int(index))
        labels = dataset.image_labels(int(index), mask)
        names = [dataset.class_names[k] for k in np.flatnonzero(labels)]
        axes[0, column].imshow(image)
        axes[0, column].set_title("\n".join(names) or "(none)", fontsize=7)
        # Without background, mask value k is class k: shift by one so class 0 is not drawn black.
        axes[1, column].imshow(colorize(np.where(mask == IGNORE_INDEX, IGNORE_INDEX, mask + 1 - offset)),
                               interpolation="nearest")
        axes[1, column].set_xlabel(dataset.ids[int(index)], fontsize=6)
        for ax in axes[:, column]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{getattr(dataset, 'name', '')} {dataset.split}", fontsize=9)
    fig.tight_layout()
    return fig


def format_summary(summary: dict) -> str:
    """A plain-text table of `dataset_summary` output."""
    fractions = summary["pixel_fraction"]
    rows = list(fractions)  # background (if any), the classes in order, ignore
    table = pd.DataFrame({
        "images": [summary["images_per_class"].get(row, "-") for row in rows],
        "pixel_fraction": [f"{fractions[row]:.4f}" for row in rows],
    }, index=rows)
    lines = [
        f"{summary['dataset']} / {summary['split']}: {summary['images']} images "
        f"({summary['images_in_split']} in split), {summary['num_classes']} classes, "
        f"background={summary['has_background']}, channels={summary['num_channels']}, root={summary['root']}",
        f"image size (h, w): min {tuple(summary['image_size']['min_hw'])}, max {tuple(summary['image_size']['max_hw'])}",
        "labels per image: " + ", ".join(f"{k}: {v}" for k, v in summary["labels_per_image"].items()),
        table.to_string(),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.data.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--root", default=None, help="data root or dataset folder (default $KYAM_DATA_ROOT or <repo>/data)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else default_data_root()
    dataset = build_dataset(args.dataset, ensure_dataset(args.dataset, root) if args.root is None else root, args.split)
    summary = dataset_summary(dataset, max_images=args.max_images)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
