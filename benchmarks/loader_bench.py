"""Benchmark of the VOC-layout training loader: images/s by DataLoader worker count.

    python -m benchmarks.bench --loader --out results          # merges into results/benchmarks.{json,md}

A VOC-layout tree of 500x375 JPEGs (VOC's most common size) is written to a temporary folder, then
the `paper` preset's training pipeline (decode, random resized crop to 224, flip, normalise, the
per-sample seeded augmentation) is timed for each worker count over whole epochs. The record keys:
``loader_images_per_s`` ({workers: images/s}) and ``loader_benchmark`` (settings, CPU). A GPU's
ViT-B/16 step needs about 3,000 images/s; the ratio loader ÷ model is pending until a GPU run
(`python -m benchmarks.bench --gpu`) fills ``gpu_vitb_images_per_s``.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kyam_lib.data import build_dataset
from kyam_lib.train import SeededAugmentation

__all__ = ["write_voc_layout", "measure_loader", "loader_record", "loader_markdown"]


def write_voc_layout(root: Path, *, images: int, size: tuple[int, int] = (375, 500), seed: int = 0) -> Path:
    """A VOC2012-layout folder of `images` photo-like JPEGs (smooth shading, texture, an object) and masks."""
    rng = np.random.default_rng(seed)
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    for directory in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    ids = [f"2012_{i:06d}" for i in range(images)]
    for image_id in ids:
        base = rng.integers(40, 200, 3)
        shade = (rows / height * 60 + cols / width * 40)[..., None]
        image = np.clip(base + shade + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((height, width), np.uint8)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[top:top + height // 3, left:left + width // 3] = rng.integers(1, 21)
        image[mask > 0] = np.clip(image[mask > 0].astype(int) + 60, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def loader_record(*, images: int = 256, workers: Sequence[int] = (0, 1, 2), batch_size: int = 16,
                  epochs: int = 3) -> dict[str, Any]:
    """The benchmarks.json keys of one loader measurement on a fresh temporary VOC-layout tree."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the main process decodes on one thread, as each worker does
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = write_voc_layout(Path(tmp) / "VOC2012", images=images)
            rates = measure_loader(root, workers=workers, batch_size=batch_size, epochs=epochs)
    finally:
        torch.set_num_threads(threads)
    return {"loader_images_per_s": rates,
            "loader_benchmark": {"images": images, "batch_size": batch_size, "epochs": epochs,
                                 "image_size": [224, 224], "cpu_count": len(os.sched_getaffinity(0)),
                                 "load_average": list(os.getloadavg())}}


def measure_loader(root: Path, *, workers: Sequence[int] = (0, 1, 2), batch_size: int = 16,
                   image_size: tuple[int, int] = (224, 224), epochs: int = 2) -> dict[str, Any]:
    """{workers: images/s} of the augmented training loader over `epochs` passes (the first batch of each
    pass, which includes the workers' start-up, is counted too: that is what an epoch costs)."""
    dataset = SeededAugmentation(build_dataset("voc", root, "train", image_size=image_size, augment=True), seed=0)
    rates: dict[str, float] = {}
    for count in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=count,
                            persistent_workers=count > 0, generator=torch.Generator().manual_seed(0))
        seen, started = 0, time.perf_counter()
        for epoch in range(epochs):
            dataset.set_epoch(epoch)
            for batch in loader:
                seen += len(batch["image"])
        rates[str(count)] = seen / (time.perf_counter() - started)
        del loader
    return rates


def loader_markdown(record: dict[str, Any]) -> list[str]:
    """The benchmarks.md section of the loader measurement."""
    rates, info = record["loader_images_per_s"], record.get("loader_benchmark", {})
    load = f"{info['load_average'][0]:.1f}" if info.get("load_average") else "?"
    lines = ["", "## VOC-layout loader (CPU)", "",
             f"`python -m benchmarks.bench --loader`: {info.get('images', '?')} JPEGs of 500×375, the paper preset's "
             f"training transform (random resized crop to 224, flip, normalise), batch {info.get('batch_size', '?')}, "
             f"{info.get('epochs', '?')} epochs per worker count (worker start-up included), on "
             f"{info.get('cpu_count', '?')} CPU cores shared with other work (1-minute load average "
             f"{load} at the end) — a floor, not what a GPU box's cores give.", "", "| DataLoader workers | images/s |", "|---|---|"]
    lines += [f"| {workers} | {rate:.0f} |" for workers, rate in rates.items()]
    gpu = record.get("gpu_vitb_images_per_s")
    lines += ["", (f"Loader ÷ GPU model images/s: {max(rates.values()) / gpu:.2f}." if gpu else
                   "GPU figures pending: no GPU was lent to this session, so the loader ÷ model ratio "
                   "(a ViT-B/16 step needs roughly 3,000 images/s) is not measured yet.")]
    return lines
