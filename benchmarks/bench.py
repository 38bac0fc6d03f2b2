"""Performance benchmarks: kyam against a plain timm ViT and the straightforward implementations.

    python -m benchmarks.bench                 # full run on this CPU → results/benchmarks.{json,md}
    python -m benchmarks.bench --smoke --out /tmp/bench   # tiny shapes, seconds (tests)
    python -m benchmarks.bench --gpu           # adds the GPU benchmarks (bf16, images/s, MFU)

Each figure is a ratio of two measurements taken in one run, on the same machine and inputs:
1. one training step (`train.train_step` as kyam's loop runs it: forward, backward, AdamW, everything per step) of
   KyamViT against a plain timm VisionTransformer of the same width, depth, heads and token count;
2. peak memory to obtain the class maps at ADE20K shape: kyam's class-row extraction against a
   recorder that keeps every block's full N x N attention (forward hooks), each in a fresh process;
3. pseudo-mask throughput: the batched no-background rule against the same rule with the
   per-pixel breadth-first nearest-label fill of `benchmarks.reference`;
4. the wall time of `make reproduce` (quick preset), read from the run's `reproduce_timing.json`;
5. with `--gpu`: ViT-B/16 bf16 training images/s, model FLOPs utilisation, and benchmark 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from kyam_lib.method.class_maps import class_maps
from kyam_lib.config import TrainConfig
from kyam_lib.io import atomic_write, read_json, write_json
from .loader_bench import loader_markdown, loader_record
from kyam_lib.method.model import KyamViT, model_size
from kyam_lib.method.pseudo_masks import masks_without_background
from .reference import nearest_label_fill_bfs
from kyam_lib.runtime import attention_kernels
from kyam_lib.train import TrainingCheck, classifier_loss, make_optimizer, make_scheduler, model_config_for, train_step

__all__ = ["TrainStepCase", "MemoryCase", "MaskCase", "BenchSettings", "FULL", "SMOKE", "REQUIRED_KEYS",
           "NULLABLE_KEYS", "TARGETS", "vit_forward_flops", "peak_bf16_flops", "compare_train_steps",
           "measure_class_map_memory", "compare_pseudo_masks", "reference_masks_without_background",
           "read_reproduce_timing", "gpu_benchmarks", "run_benchmarks", "render_markdown", "main"]

REQUIRED_KEYS = ("train_step_ratio_small", "train_step_ratio_vitb", "class_map_memory_ratio",
                 "pseudo_mask_speedup", "reproduce_quick_seconds", "small_epoch_seconds_cpu",
                 "vitb_step_seconds_cpu")
GPU_KEYS = ("gpu_name", "gpu_vitb_images_per_s", "gpu_mfu", "gpu_train_step_ratio_vitb")
# Keys that are null when their measurement was not taken (no timing file, no GPU).
NULLABLE_KEYS = ("reproduce_quick_seconds",) + GPU_KEYS
# (comparison, bound): "max" means the ratio must not exceed the bound, "min" that it must reach it.
TARGETS: dict[str, tuple[str, float]] = {
    "train_step_ratio_small": ("max", 1.10),
    "train_step_ratio_vitb": ("max", 1.10),
    "class_map_memory_ratio": ("max", 0.10),
    "pseudo_mask_speedup": ("min", 20.0),
    "gpu_mfu": ("min", 0.35),
    "gpu_train_step_ratio_vitb": ("max", 1.10),
}
# Dense bf16 tensor-core peak (FLOP/s) by a substring of the device name; first match wins.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),   # SXM
    ("A100", 312e12),
)
EPOCH_IMAGES = 2000  # the small preset's epoch on the embedded synthetic data
STEPS_PER_EPOCH = 10_000  # of the benchmark's schedules: the timed steps stay in epoch 0


# -- settings ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainStepCase:
    """One train-step comparison: model size, input shape, batch, and how many timed pairs."""

    model_size: str
    image_size: tuple[int, int]
    patch_size: int
    num_classes: int
    batch_size: int
    warmup: int          # untimed steps of each model before timing
    repeats: int         # timed (kyam, plain) pairs, interleaved
    deterministic: bool = True  # TrainConfig.deterministic; False: fused attention kernels on CUDA (the paper preset)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryCase:
    """Class-map extraction shape: batch 1, no gradient."""

    model_size: str
    image_size: tuple[int, int]
    patch_size: int
    num_classes: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class MaskCase:
    """Pseudo-mask throughput: random smooth maps (a coarse random grid upsampled bilinearly)."""

    batch_size: int
    num_classes: int
    image_size: int
    grid: int                  # side of the random grid the maps are upsampled from
    max_selected: int          # image i has 1 + i % max_selected predicted classes
    repeats: int               # timed passes of the batched rule over the batch
    reference_images: int      # at most this many images through the per-pixel reference
    reference_budget_s: float  # ...and stop starting new ones after this many seconds


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchSettings:
    smoke: bool
    threads: int
    small: TrainStepCase
    vitb: TrainStepCase
    memory: MemoryCase
    masks: MaskCase
    gpu_vitb: TrainStepCase


FULL = BenchSettings(
    smoke=False,
    threads=2,
    small=TrainStepCase(model_size="small", image_size=(64, 64), patch_size=8, num_classes=6, batch_size=64,
                        warmup=3, repeats=25),
    vitb=TrainStepCase(model_size="base", image_size=(224, 224), patch_size=16, num_classes=20, batch_size=8,
                       warmup=1, repeats=7),
    memory=MemoryCase(model_size="base", image_size=(208, 320), patch_size=8, num_classes=151),
    masks=MaskCase(batch_size=12, num_classes=20, image_size=512, grid=32, max_selected=3, repeats=3,
                   reference_images=12, reference_budget_s=600.0),
    gpu_vitb=TrainStepCase(model_size="base", image_size=(224, 224), patch_size=16, num_classes=20,
                           batch_size=128, warmup=5, repeats=20, deterministic=False),
)
SMOKE = BenchSettings(
    smoke=True,
    threads=1,
    small=TrainStepCase(model_size="tiny", image_size=(32, 32), patch_size=8, num_classes=4, batch_size=4,
                        warmup=1, repeats=2),
    vitb=TrainStepCase(model_size="tiny", image_size=(32, 32), patch_size=16, num_classes=5, batch_size=2,
                       warmup=1, repeats=2),
    memory=MemoryCase(model_size="tiny", image_size=(32, 48), patch_size=8, num_classes=5),
    masks=MaskCase(batch_size=2, num_classes=20, image_size=48, grid=6, max_selected=3, repeats=2,
                   reference_images=2, reference_budget_s=5.0),
    gpu_vitb=TrainStepCase(model_size="tiny", image_size=(32, 32), patch_size=16, num_classes=5, batch_size=4,
                           warmup=1, repeats=2, deterministic=False),
)


# -- FLOPs and peaks --------------------------------------------------------------------------
def vit_forward_flops(*, embed_dim: int, depth: int, num_tokens: int, num_patches: int, patch_size: int,
                      in_channels: int = 3, mlp_ratio: float = 4.0, head_in: int = 0, head_out: int = 0) -> float:
    """Matrix-multiply FLOPs (2 per multiply-add) of one image's forward pass through a ViT.

    Per block: qkv 6ND², proj 2ND², MLP 4·r·ND², scores and weighted values 4N²D; plus the patch
    embedding 2·P·(c·p²)·D and a head Linear(head_in → head_out). A training step is 3 forwards.
    """
    n, d = num_tokens, embed_dim
    block = (6 + 2 + 4 * mlp_ratio) * n * d * d + 4 * n * n * d
    patch_embed = 2 * num_patches * in_channels * patch_size ** 2 * d
    return depth * block + patch_embed + 2 * head_in * head_out


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by name (`PEAK_BF16_FLOPS`); None when the name is unknown."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


# -- helpers ----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _top_ops(step: Callable[[], None], device: torch.device, *, steps: int = 1, rows: int = 12) -> list[dict[str, Any]]:
    """torch.profiler's top ops of `step` by self time (per step, ms)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0.0), reverse=True)
    return [{"op": e.key, "self_ms": getattr(e, attr, 0.0) / 1e3 / steps, "calls": e.count // steps}
            for e in averages[:rows]]


# -- 1. train step ----------------------------------------------------------------------------
def _plain_vit(case: TrainStepCase, num_tokens: int) -> VisionTransformer:
    """timm ViT of the same size whose [CLS] + register tokens make up kyam's class tokens and [REG]."""
    size = model_size(case.model_size)
    grid = (case.image_size[0] // case.patch_size) * (case.image_size[1] // case.patch_size)
    return VisionTransformer(img_size=case.image_size, patch_size=case.patch_size, num_classes=case.num_classes,
                             embed_dim=size.embed_dim, depth=size.depth, num_heads=size.num_heads, class_token=True,
                             reg_tokens=num_tokens - grid - 1)


def _batch(case: TrainStepCase, device: torch.device, generator: torch.Generator) -> dict[str, Tensor]:
    images = torch.randn(case.batch_size, 3, *case.image_size, generator=generator)
    labels = (torch.rand(case.batch_size, case.num_classes, generator=generator) < 0.3).float()
    labels[torch.arange(case.batch_size), torch.randint(case.num_classes, (case.batch_size,), generator=generator)] = 1
    return {"image": images.to(device), "labels": labels.to(device), "index": torch.arange(case.batch_size)}


def _kyam_step(model: KyamViT, cfg: TrainConfig, batch: dict[str, Tensor], device: torch.device,
               amp_dtype: torch.dtype | None) -> Callable[[], None]:
    """One iteration of `train.train`'s loop (data loading excepted): `train.train_step` with the loop's
    loss (`train.classifier_loss`: lambda and gate warm-ups, gate noise stream), attention kernels and
    non-finite check (`train.TrainingCheck`), then the running sums."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=STEPS_PER_EPOCH)
    gate_generator = torch.Generator().manual_seed(cfg.seed + 1)
    kernels = functools.partial(attention_kernels, device, cfg.deterministic)
    check = TrainingCheck(cfg, out_dir=Path("benchmark"), epoch=0, steps=STEPS_PER_EPOCH, device=device)
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    steps_done = 0

    def step() -> None:
        nonlocal sums, steps_done
        loss_fn = classifier_loss(model, cfg, epoch=0, epochs_done=steps_done / STEPS_PER_EPOCH,
                                  gate_generator=gate_generator)
        sums += train_step(model, optimizer, scheduler, batch, loss_fn, amp_dtype=amp_dtype, kernels=kernels,
                           grad_clip=cfg.grad_clip, check=check)
        steps_done += 1

    return step


def _plain_step(model: nn.Module, cfg: TrainConfig, batch: dict[str, Tensor], device: torch.device,
                amp_dtype: torch.dtype | None) -> Callable[[], None]:
    """The same loop body for a plain ViT: BCE loss, same optimizer, schedule, clipping and bookkeeping."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=STEPS_PER_EPOCH)
    sums = torch.zeros(1, device=device)

    def step() -> None:
        nonlocal sums
        images, labels = batch["image"], batch["labels"]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        if not torch.isfinite(loss):
            raise RuntimeError("bench: non-finite plain-ViT loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        sums += loss.detach().float()

    return step


def compare_train_steps(case: TrainStepCase, *, device: torch.device | str = "cpu",
                        amp_dtype: torch.dtype | None = None, profile_if_above: float | None = None) -> dict[str, Any]:
    """Median kyam / plain-ViT train-step time over interleaved pairs (order alternating per pair).

    Returns seconds (wall and process CPU) of each model, the median per-pair ratio, and, when that
    ratio exceeds `profile_if_above`, torch.profiler's top ops of one step of each.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    cfg = TrainConfig(model_size=case.model_size, image_size=case.image_size, patch_size=case.patch_size,
                      batch_size=case.batch_size, deterministic=case.deterministic)
    model_config = model_config_for(cfg, num_classes=case.num_classes, in_channels=3, multi_label=True)
    kyam = KyamViT(model_config).to(device).train()
    num_tokens = kyam.layout(model_config.grid_size).length
    plain = _plain_vit(case, num_tokens).to(device).train()
    if plain.num_prefix_tokens + plain.patch_embed.num_patches != num_tokens:
        raise RuntimeError(f"bench: plain ViT has {plain.num_prefix_tokens + plain.patch_embed.num_patches} tokens, "
                           f"kyam {num_tokens}")
    batch = _batch(case, device, torch.Generator().manual_seed(0))
    steps = {"kyam": _kyam_step(kyam, cfg, batch, device, amp_dtype),
             "plain": _plain_step(plain, cfg, batch, device, amp_dtype)}

    def timed(name: str) -> tuple[float, float]:
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        steps[name]()
        _sync(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for _ in range(case.warmup):
        timed("kyam"), timed("plain")
    wall: dict[str, list[float]] = {"kyam": [], "plain": []}
    cpu: dict[str, list[float]] = {"kyam": [], "plain": []}
    for repeat in range(case.repeats):
        # Alternating the order cancels any drift that favours whichever model runs first.
        for name in (("kyam", "plain") if repeat % 2 == 0 else ("plain", "kyam")):
            w, c = timed(name)
            wall[name].append(w)
            cpu[name].append(c)
    ratios = [k / p for k, p in zip(wall["kyam"], wall["plain"])]
    result: dict[str, Any] = {
        "ratio": _median(ratios),
        "cpu_time_ratio": _median([k / p for k, p in zip(cpu["kyam"], cpu["plain"])]),
        # Best of N: the runs least disturbed by other work on the machine.
        "min_time_ratio": min(wall["kyam"]) / min(wall["plain"]),
        "kyam_seconds": _median(wall["kyam"]),
        "plain_seconds": _median(wall["plain"]),
        "kyam_seconds_all": wall["kyam"],
        "plain_seconds_all": wall["plain"],
        "num_tokens": num_tokens,
        "kyam_flops_per_image": 3 * vit_forward_flops(
            embed_dim=model_config.embed_dim, depth=model_config.depth, num_tokens=num_tokens,
            num_patches=model_config.grid_size[0] * model_config.grid_size[1], patch_size=case.patch_size,
            mlp_ratio=model_config.mlp_ratio, head_in=case.num_classes * model_config.embed_dim,
            head_out=case.num_classes),
    }
    if profile_if_above is not None and result["ratio"] > profile_if_above:
        result["profile"] = {name: _top_ops(step, device) for name, step in steps.items()}
    del kyam, plain, steps
    gc.collect()
    return result


# -- 2. class-map memory ----------------------------------------------------------------------
MEMORY_VARIANTS = ("kyam_gated_mean", "kyam_all_heads", "hook_recorder")


def _rss_bytes(field: str) -> int | None:
    """VmRSS / VmHWM of this process in bytes, from /proc (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: `5` into clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _allocator_peak(run: Callable[[], Any]) -> int | None:
    """Peak of live bytes allocated by torch's CPU allocator during `run`, from profiler memory events."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = run()
            del result
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
    except (AttributeError, RuntimeError):  # profiler internals differ between torch versions
        return None
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def _memory_child(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Measure `spec["variants"]` one after the other in this process (normally a fresh one, one variant)."""
    torch.set_num_threads(spec["threads"])
    case = MemoryCase(**{**spec["case"], "image_size": tuple(spec["case"]["image_size"])})
    results = {}
    for variant in spec["variants"]:
        results[variant] = _measure_variant(variant, case)
        gc.collect()
    return results


def _measure_variant(variant: str, case: MemoryCase) -> dict[str, Any]:
    """Peak memory of one class-map extraction above the baseline after the model is built and warmed up."""
    torch.manual_seed(0)
    size = model_size(case.model_size)
    grid = (case.image_size[0] // case.patch_size, case.image_size[1] // case.patch_size)
    images = torch.randn(1, 3, *case.image_size)
    if variant in ("kyam_gated_mean", "kyam_all_heads"):
        cfg = TrainConfig(model_size=case.model_size, image_size=case.image_size, patch_size=case.patch_size)
        model = KyamViT(model_config_for(cfg, num_classes=case.num_classes, in_channels=3, multi_label=True)).eval()
        heads = "gated_mean" if variant == "kyam_gated_mean" else "all"

        def run() -> Tensor:
            with torch.no_grad():
                out = model(images, return_attention=True, attention_heads=heads)
                gates = None if heads == "gated_mean" else out.head_gates  # gated_mean is already weighted
                return class_maps(out.class_attention, gates, grid_size=out.grid_size, image_size=case.image_size)
    elif variant == "hook_recorder":
        model = VisionTransformer(img_size=case.image_size, patch_size=case.patch_size, num_classes=case.num_classes,
                                  embed_dim=size.embed_dim, depth=size.depth, num_heads=size.num_heads, class_token=True,
                                  reg_tokens=case.num_classes).eval()
        recorded: list[Tensor] = []
        for block in model.blocks:
            block.attn.fused_attn = False  # the explicit path, whose softmax output passes attn_drop
            block.attn.attn_drop.register_forward_hook(lambda module, args, output: recorded.append(output.detach()))
        rows = slice(1, 1 + case.num_classes)  # the register tokens stand in for the class tokens
        columns = slice(model.num_prefix_tokens, None)

        def run() -> Tensor:
            recorded.clear()
            with torch.no_grad():
                model(images)
                maps = sum(attention[:, :, rows, columns].mean(dim=1) for attention in recorded)
                recorded.clear()
                maps = maps.reshape(1, case.num_classes, *grid)
                return F.interpolate(maps, size=case.image_size, mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"memory variant: expected one of {MEMORY_VARIANTS}, got {variant!r}")

    run()  # warm-up (result dropped): thread pools and kernel caches are set up outside the measurement
    gc.collect()
    baseline = _rss_bytes("VmRSS")
    method = "VmHWM after clear_refs" if _reset_peak_rss() and baseline is not None else "ru_maxrss"
    if method == "ru_maxrss":
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    maps = run()
    seconds = time.perf_counter() - started
    peak = _rss_bytes("VmHWM") if method != "ru_maxrss" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shape = list(maps.shape)
    del maps
    gc.collect()
    return {"variant": variant, "rss_peak_bytes": max(0, peak - baseline), "rss_baseline_bytes": baseline,
            "allocator_peak_bytes": _allocator_peak(run), "seconds": seconds, "maps_shape": shape,
            "rss_method": method}


def measure_class_map_memory(case: MemoryCase, *, threads: int, fresh_process_each: bool = True) -> dict[str, Any]:
    """Each variant in a fresh process; ratios of peak memory increase over the model-built baseline.

    glibc is told to serve every block of 128 KiB or more by mmap (fixed threshold), so freed
    tensors leave the resident set at once and its peak tracks the live bytes.
    `fresh_process_each=False` measures all variants in one process (smoke runs: one start-up).
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                          os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    groups = [[variant] for variant in MEMORY_VARIANTS] if fresh_process_each else [list(MEMORY_VARIANTS)]
    results: dict[str, Any] = {}
    for variants in groups:
        spec = {"variants": variants, "threads": threads, "case": dataclasses.asdict(case)}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--memory-child", json.dumps(spec)],
                              env=env, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"bench: memory variants {variants} failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-2000:]}")
        results.update(json.loads(lines[-1]))
    # One page is the resolution of the resident-set figures: a smaller reference peak reads as one page.
    reference = {**results["hook_recorder"], "rss_peak_bytes": max(results["hook_recorder"]["rss_peak_bytes"], 4096)}
    size = model_size(case.model_size)
    patches = (case.image_size[0] // case.patch_size) * (case.image_size[1] // case.patch_size)
    tokens = case.num_classes + patches + 1
    allocator = [results[v]["allocator_peak_bytes"] for v in ("kyam_gated_mean", "kyam_all_heads", "hook_recorder")]
    return {
        "ratio": results["kyam_gated_mean"]["rss_peak_bytes"] / reference["rss_peak_bytes"],
        "ratio_all_heads": results["kyam_all_heads"]["rss_peak_bytes"] / reference["rss_peak_bytes"],
        "allocator_ratio": allocator[0] / allocator[2] if None not in allocator and allocator[2] else None,
        "allocator_ratio_all_heads": allocator[1] / allocator[2] if None not in allocator and allocator[2] else None,
        "variants": results,
        "num_tokens": tokens,
        # What each output holds (float32 bytes), to tell what dominates the peaks.
        "bytes_full_attention": 4 * size.depth * size.num_heads * tokens * tokens,
        "bytes_class_rows_all_heads": 4 * size.depth * size.num_heads * case.num_classes * patches,
        "bytes_class_rows_gated_mean": 4 * size.depth * case.num_classes * patches,
        "bytes_class_maps": 4 * case.num_classes * case.image_size[0] * case.image_size[1],
    }


# -- 3. pseudo-masks --------------------------------------------------------------------------
def reference_masks_without_background(class_maps: Tensor, probs: Tensor, selected: Tensor) -> np.ndarray:
    """The no-background rule for one image, written plainly: (C, H, W) maps, (C,) probs and selection → (H, W).

    Paint each selected map above its mean in ascending probability (stable order), then fill the
    rest with `reference.nearest_label_fill_bfs`.
    """
    selected = selected.bool()
    if not selected.any():
        selected = torch.zeros_like(selected)
        selected[probs.argmax()] = True
    order = [c for c in torch.argsort(probs, stable=True).tolist() if selected[c]]
    labels = np.full(class_maps.shape[1:], -1, dtype=np.int64)
    for c in order:
        labels[(class_maps[c] > class_maps[c].mean()).numpy()] = c
    if (labels < 0).all():  # nothing above its mean: the class that would have won overlaps
        return np.full_like(labels, order[-1])
    return nearest_label_fill_bfs(labels)


def _random_masks_input(case: MaskCase, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    coarse = torch.rand(case.batch_size, case.num_classes, case.grid, case.grid, generator=generator)
    maps = F.interpolate(coarse, size=(case.image_size, case.image_size), mode="bilinear", align_corners=False)
    probs = 0.5 * torch.rand(case.batch_size, case.num_classes, generator=generator)
    for image in range(case.batch_size):
        count = 1 + image % case.max_selected  # 1, 2, 3, 1, ...: the per-image cost depends on the count
        chosen = torch.randperm(case.num_classes, generator=generator)[:count]
        probs[image, chosen] = 0.5 + 0.5 * torch.rand(count, generator=generator)
    return maps, probs, probs >= 0.5


def compare_pseudo_masks(case: MaskCase) -> dict[str, Any]:
    """Images/s of `masks_without_background` on the batch against the per-image reference."""
    maps, probs, selected = _random_masks_input(case, torch.Generator().manual_seed(0))
    batched_seconds = []
    for _ in range(case.repeats):
        started = time.perf_counter()
        masks = masks_without_background(maps, probs, selected)
        batched_seconds.append(time.perf_counter() - started)
    reference_seconds, agree, total = 0.0, 0, 0
    done = 0
    for image in range(min(case.reference_images, case.batch_size)):
        if done and reference_seconds > case.reference_budget_s:
            break
        started = time.perf_counter()
        expected = reference_masks_without_background(maps[image], probs[image], selected[image])
        reference_seconds += time.perf_counter() - started
        agree += int((masks[image].numpy() == expected).sum())
        total += expected.size
        done += 1
    ours = case.batch_size / _median(batched_seconds)
    reference = done / reference_seconds
    profile = None
    if ours / reference < TARGETS["pseudo_mask_speedup"][1]:
        def batched() -> None:
            masks_without_background(maps, probs, selected)
        profile = _python_profile(batched)
    return {
        "speedup": ours / reference,
        "ours_images_per_s": ours,
        "reference_images_per_s": reference,
        "ours_seconds_per_batch": _median(batched_seconds),
        "reference_seconds": reference_seconds,
        "reference_images": done,
        # Equidistant nearest labels may be broken differently; everything else must agree.
        "pixel_agreement": agree / total,
        "unassigned_fraction": float((~_assigned(maps, selected)).float().mean()),
        **({"profile": profile} if profile is not None else {}),
    }


def _python_profile(run: Callable[[], Any], *, rows: int = 10) -> list[dict[str, Any]]:
    """cProfile's top functions of `run` by cumulative time (seconds), the call itself left out."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run)
    stats = pstats.Stats(profiler).stats  # (file, line, name) → (calls, primitive, self s, cumulative s, callers)
    entries = sorted(((key, value) for key, value in stats.items() if key[2] != run.__name__),
                     key=lambda item: item[1][3], reverse=True)
    return [{"function": f"{Path(key[0]).name}:{key[2]}" if key[0] != "~" else key[2], "calls": value[0],
             "self_s": value[2], "cumulative_s": value[3]} for key, value in entries[:rows]]


def _assigned(maps: Tensor, selected: Tensor) -> Tensor:
    above = maps > maps.mean(dim=(2, 3), keepdim=True)
    return (above & selected[:, :, None, None]).any(dim=1)


# -- 4. reproduce timing ----------------------------------------------------------------------
def read_reproduce_timing(path: str | os.PathLike) -> dict[str, Any] | None:
    """{"preset", "seconds"} written by the reproduce driver; None when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("preset"), str):
        raise ValueError(f"{path}: expected a JSON object with a string 'preset' and a number 'seconds'")
    seconds = record.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{path}: 'seconds' must be a non-negative number, got {seconds!r}")
    return {"preset": record["preset"], "seconds": float(seconds)}


def reproduce_timing_fields(timing: dict[str, Any] | None, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Benchmark 4's keys: the quick preset's wall time. A record of another preset (the driver's
    file after `make reproduce PRESET=full`) or none keeps the quick numbers of `previous` (the
    earlier benchmarks.json), null when it has none."""
    if timing and timing["preset"] == "quick":
        return {"reproduce_quick_seconds": timing["seconds"], "reproduce_timing": timing}
    previous = previous or {}
    return {"reproduce_quick_seconds": previous.get("reproduce_quick_seconds"),
            "reproduce_timing": previous.get("reproduce_timing")}


# -- 5. GPU -----------------------------------------------------------------------------------
def gpu_benchmarks(case: TrainStepCase, *, peak_flops: float | None = None) -> dict[str, Any]:
    """bf16 train steps of kyam and the plain ViT on the current CUDA device: images/s, MFU, ratio."""
    if not torch.cuda.is_available():
        raise RuntimeError("--gpu: no CUDA device is visible to torch")
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = peak_flops if peak_flops is not None else peak_bf16_flops(name)
    step = compare_train_steps(case, device=device, amp_dtype=torch.bfloat16,
                               profile_if_above=TARGETS["gpu_train_step_ratio_vitb"][1])
    images_per_s = case.batch_size / step["kyam_seconds"]
    return {
        "gpu_name": name,
        "gpu_vitb_images_per_s": images_per_s,
        "gpu_plain_vit_images_per_s": case.batch_size / step["plain_seconds"],
        "gpu_mfu": images_per_s * step["kyam_flops_per_image"] / peak if peak else None,
        "gpu_peak_bf16_flops": peak,
        "gpu_train_step_ratio_vitb": step["ratio"],
        "gpu_batch_size": case.batch_size,
        "gpu_train_step": step,
    }


# -- driver -----------------------------------------------------------------------------------
def run_benchmarks(settings: BenchSettings, *, reproduce_timing: str | os.PathLike, gpu: bool = False,
                   gpu_peak_flops: float | None = None, log: Callable[[str], None] = print,
                   previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every benchmark in turn (nothing runs alongside); returns the JSON record. `previous`: the
    earlier record, whose quick reproduce time is kept when the timing file is another preset's."""
    torch.set_num_threads(settings.threads)
    load_start = _load()
    started = time.perf_counter()
    record: dict[str, Any] = {"smoke": settings.smoke}

    log("train step, small preset ...")
    small = compare_train_steps(settings.small, profile_if_above=TARGETS["train_step_ratio_small"][1])
    log(f"  ratio {small['ratio']:.3f} ({time.perf_counter() - started:.0f} s)")
    log("train step, ViT-B/16 ...")
    vitb = compare_train_steps(settings.vitb, profile_if_above=TARGETS["train_step_ratio_vitb"][1])
    log(f"  ratio {vitb['ratio']:.3f} ({time.perf_counter() - started:.0f} s)")
    log("class-map memory ...")
    memory = measure_class_map_memory(settings.memory, threads=settings.threads,
                                      fresh_process_each=not settings.smoke)
    log(f"  ratio {memory['ratio']:.3f} ({time.perf_counter() - started:.0f} s)")
    log("pseudo-masks ...")
    masks = compare_pseudo_masks(settings.masks)
    log(f"  speedup {masks['speedup']:.1f} ({time.perf_counter() - started:.0f} s)")
    timing = read_reproduce_timing(reproduce_timing)

    steps_per_epoch = EPOCH_IMAGES // settings.small.batch_size
    record.update({
        "train_step_ratio_small": small["ratio"],
        "train_step_ratio_vitb": vitb["ratio"],
        "class_map_memory_ratio": memory["ratio"],
        "pseudo_mask_speedup": masks["speedup"],
        **reproduce_timing_fields(timing, previous),
        "small_epoch_seconds_cpu": steps_per_epoch * small["kyam_seconds"],
        "vitb_step_seconds_cpu": vitb["kyam_seconds"],
        # From the fastest step instead of the median: closer to what a quiet machine gives.
        "small_epoch_seconds_cpu_best": steps_per_epoch * min(small["kyam_seconds_all"]),
        "vitb_step_seconds_cpu_best": min(vitb["kyam_seconds_all"]),
        "train_step_small": small,
        "train_step_vitb": vitb,
        "class_map_memory": memory,
        "pseudo_masks": masks,
        "small_epoch_steps": steps_per_epoch,
    })
    record.update(dict.fromkeys(GPU_KEYS))
    if gpu:
        log("GPU ...")
        record.update(gpu_benchmarks(settings.gpu_vitb, peak_flops=gpu_peak_flops))
    record.update({
        "settings": dataclasses.asdict(settings),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "python_version": platform.python_version(),
        "cpu_name": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "num_threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average_end": _load(),
        "bench_seconds": time.perf_counter() - started,
    })
    return record


def _fmt_seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _fmt_bytes(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def _met(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    kind, bound = TARGETS[key]
    return "yes" if (value <= bound if kind == "max" else value >= bound) else "**no**"


def _target(key: str) -> str:
    kind, bound = TARGETS[key]
    return f"≤ {bound:.2f}" if kind == "max" else (f"≥ {bound:g}×" if key == "pseudo_mask_speedup" else f"≥ {bound:.0%}")


def _profile_table(profile: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| model | op | self time per step | calls |", "|---|---|---|---|"]
    for name, ops in profile.items():
        lines += [f"| {name} | `{op['op']}` | {op['self_ms']:.1f} ms | {op['calls']} |" for op in ops]
    return lines


def render_markdown(record: dict[str, Any]) -> str:
    """`benchmarks.md`: the table of ratios and targets, then how each figure was measured."""
    s = record["settings"]
    small, vitb = record["train_step_small"], record["train_step_vitb"]
    memory, masks = record["class_map_memory"], record["pseudo_masks"]
    sm, vb, mc, mk = s["small"], s["vitb"], s["memory"], s["masks"]
    lines = ["# kyam performance benchmarks", ""]
    if record["smoke"]:
        lines += ["**Smoke run** (`--smoke`): tiny shapes that check the code path; the numbers mean nothing.", ""]
    lines += [
        f"CPU: {record['cpu_name']}, {record['num_threads']} torch threads ({record['cpu_count']} cores visible); "
        f"torch {record['torch_version']}, timm {record['timm_version']}. Load average (1, 5, 15 min) "
        f"{record['load_average_start']} at the start, {record['load_average_end']} at the end "
        f"(the machine is shared; see the notes on noise). Whole run: {record['bench_seconds']:.0f} s.",
        "",
        "| benchmark | ours | reference | ratio | target | met? |",
        "|---|---|---|---|---|---|",
        f"| 1. train step, small preset ({sm['image_size'][0]}×{sm['image_size'][1]}, patch {sm['patch_size']}, "
        f"{sm['num_classes']} classes, batch {sm['batch_size']}), CPU | {_fmt_seconds(small['kyam_seconds'])} "
        f"| {_fmt_seconds(small['plain_seconds'])} (timm ViT) | {small['ratio']:.3f} | {_target('train_step_ratio_small')} "
        f"| {_met('train_step_ratio_small', small['ratio'])} |",
        f"| 1. train step, ViT-B/{vb['patch_size']} {vb['image_size'][0]}, {vb['num_classes']} classes, "
        f"batch {vb['batch_size']}, CPU | {_fmt_seconds(vitb['kyam_seconds'])} | {_fmt_seconds(vitb['plain_seconds'])} "
        f"(timm ViT) | {vitb['ratio']:.3f} | {_target('train_step_ratio_vitb')} | {_met('train_step_ratio_vitb', vitb['ratio'])} |",
        f"| 2. peak memory for the class maps, {mc['num_classes']} classes, {mc['image_size'][0]}×{mc['image_size'][1]}, "
        f"patch {mc['patch_size']}, ViT-{'B' if mc['model_size'] == 'base' else mc['model_size']}, batch 1 "
        f"| {_fmt_bytes(memory['variants']['kyam_gated_mean']['rss_peak_bytes'])} "
        f"| {_fmt_bytes(memory['variants']['hook_recorder']['rss_peak_bytes'])} (hooks keep N×N) "
        f"| {memory['ratio']:.3f} | {_target('class_map_memory_ratio')} | {_met('class_map_memory_ratio', memory['ratio'])} |",
        f"| 2b. the same with every head kept (`attention_heads=\"all\"`) "
        f"| {_fmt_bytes(memory['variants']['kyam_all_heads']['rss_peak_bytes'])} "
        f"| {_fmt_bytes(memory['variants']['hook_recorder']['rss_peak_bytes'])} | {memory['ratio_all_heads']:.3f} "
        f"| (for information) | — |",
        f"| 3. pseudo-masks {mk['image_size']}×{mk['image_size']}, {mk['num_classes']} classes, "
        f"1–{mk['max_selected']} predicted | {masks['ours_images_per_s']:.1f} images/s "
        f"| {masks['reference_images_per_s']:.3f} images/s (per-pixel BFS) | {masks['speedup']:.0f}× "
        f"| {_target('pseudo_mask_speedup')} | {_met('pseudo_mask_speedup', masks['speedup'])} |",
    ]
    if record["reproduce_quick_seconds"] is not None:
        lines.append(f"| 4. `make reproduce` (quick preset), wall time | {record['reproduce_quick_seconds']:.0f} s "
                     f"| — | — | — | — |")
    else:
        lines.append("| 4. `make reproduce` (quick preset), wall time | not recorded | — | — | — | — |")
    if record["gpu_name"] is not None:
        gpu = record
        mfu = "unknown peak" if gpu["gpu_mfu"] is None else f"{gpu['gpu_mfu']:.1%}"
        lines += [
            f"| 5. GPU ({gpu['gpu_name']}): ViT-B/16 224 bf16 training, batch {gpu['gpu_batch_size']} "
            f"| {gpu['gpu_vitb_images_per_s']:.0f} images/s | {gpu['gpu_plain_vit_images_per_s']:.0f} images/s (timm ViT) "
            f"| {gpu['gpu_train_step_ratio_vitb']:.3f} | {_target('gpu_train_step_ratio_vitb')} "
            f"| {_met('gpu_train_step_ratio_vitb', gpu['gpu_train_step_ratio_vitb'])} |",
            f"| 5. GPU model FLOPs utilisation (bf16 peak {gpu['gpu_peak_bf16_flops'] or 0:.3g} FLOP/s) | {mfu} | — | — "
            f"| {_target('gpu_mfu')} | {_met('gpu_mfu', gpu['gpu_mfu'])} |",
        ]
    else:
        lines.append("| 5. GPU: images/s, MFU, train-step ratio | not measured: no GPU was lent to this session "
                     "| — | — | ≥ 35 % MFU, ≤ 1.10 | — |")
    lines += ["", "Extra figures for planning: small preset, one epoch of "
              f"{EPOCH_IMAGES} images ({record['small_epoch_steps']} steps of {sm['batch_size']}) ≈ "
              f"{record['small_epoch_seconds_cpu']:.1f} s of training on this CPU (median step time × steps, "
              f"data loading and validation excluded; {record['small_epoch_seconds_cpu_best']:.1f} s from the "
              f"fastest step); ViT-B/16 224 train step, batch {vb['batch_size']}: "
              f"{record['vitb_step_seconds_cpu']:.2f} s median, {record['vitb_step_seconds_cpu_best']:.2f} s fastest. "
              "Other work on the shared cores slows the medians (see the load average above)."]
    lines += ["", "## How each figure is measured", "",
              "**1. Train step.** Both models take the same batch and the same optimizer "
              "(`train.make_optimizer`: AdamW (0.9, 0.95), its three parameter groups), the same warm-up/cosine "
              "schedule and gradient clipping. The kyam step is `train.train_step`, the step of `train.train`'s "
              "loop, with the loop's loss and check: per-sample masking uniforms, gate noise (held open during "
              "the L0 warm-up), forward with class-token masking under the loop's attention kernels, BCE + λ·L0 "
              "penalty (λ ramped in), non-finite check, backward, clip, step, schedule, running sums. The plain model is timm's "
              "`VisionTransformer` with the same width, depth and heads and the same number of tokens "
              f"([CLS] + C register tokens + patches = C class tokens + patches + [REG]: {small['num_tokens']} "
              f"and {vitb['num_tokens']} tokens). Data loading is left out (it is the same for both). After "
              f"{sm['warmup']} (small) / {vb['warmup']} (ViT-B) untimed steps of each, {sm['repeats']} / "
              f"{vb['repeats']} pairs are timed, the order alternating from pair to pair; the ratio is the "
              "median of the per-pair ratios (wall time). For comparison, the median ratio of process CPU "
              f"time is {small['cpu_time_ratio']:.3f} (small) and {vitb['cpu_time_ratio']:.3f} (ViT-B), and the "
              f"ratio of the fastest steps (best of {sm['repeats']} / {vb['repeats']}, the runs least disturbed by "
              f"other work) {small['min_time_ratio']:.3f} and {vitb['min_time_ratio']:.3f}.",
              "",
              "**2. Class-map memory.** Each variant runs in a fresh Python process" + (" (smoke runs: all in one)"
              if record["smoke"] else "") + " with glibc's mmap threshold "
              "fixed at 128 KiB (`MALLOC_MMAP_THRESHOLD_`), so a freed tensor leaves the resident set at once. The "
              "process builds its model (eval mode), runs the extraction once as a warm-up, then records its "
              f"resident set (VmRSS) as the baseline, resets the peak ({memory['variants']['hook_recorder']['rss_method']}), "
              "runs the extraction again and reads the peak (VmHWM): the figure is peak − baseline, so model "
              "weights are excluded and everything the forward pass and the class maps need is included. "
              "The extraction ends with the (B, C, H, W) class maps at image size in both variants. kyam: "
              "`model(images, return_attention=True, attention_heads=\"gated_mean\")`, which keeps only each "
              "block's gate-weighted head mean of the class-token rows, then `aggregation.class_maps(..., "
              "head_gates=None)` — the same maps as the default gate weighting of the full output. Reference: a "
              "timm ViT of the same size and token count with explicit attention and a forward hook on every "
              "block's `attn_drop` that stores the N×N attention (what a hook-based recorder does), then the "
              "class rows of the stored matrices, averaged over heads and summed over blocks. Cross-check, torch "
              "CPU-allocator peak from `torch.profiler` memory events: ratio "
              + (f"{memory['allocator_ratio']:.3f} (all heads kept: {memory['allocator_ratio_all_heads']:.3f})."
                 if memory["allocator_ratio"] is not None else "not available in this torch version."),
              "",
              f"What dominates: at N = {memory['num_tokens']} tokens the recorder keeps "
              f"{_fmt_bytes(memory['bytes_full_attention'])} of attention matrices; the class rows of every head "
              f"(`attention_heads=\"all\"`, shape (B, L, H, C, P)) are {_fmt_bytes(memory['bytes_class_rows_all_heads'])}"
              f" — C·P/N² = {memory['bytes_class_rows_all_heads'] / memory['bytes_full_attention']:.3f} of the "
              "matrices" + (", so that output alone cannot reach a tenth of the reference"
                            if memory["bytes_class_rows_all_heads"] > 0.1 * memory["bytes_full_attention"] else "")
              + ", and `aggregation.class_maps` copies it while selecting blocks and contracting heads. "
              "The gate-weighted head mean "
              f"is {_fmt_bytes(memory['bytes_class_rows_gated_mean'])}; the class maps at image size are "
              f"{_fmt_bytes(memory['bytes_class_maps'])}, and one block's activations and class-row softmax "
              "make up most of the rest.",
              "",
              f"**3. Pseudo-masks.** {mk['batch_size']} images of {mk['num_classes']} random smooth maps "
              f"({mk['grid']}×{mk['grid']} uniform noise upsampled bilinearly to {mk['image_size']}²), "
              f"1 to {mk['max_selected']} classes predicted (image i has 1 + i mod {mk['max_selected']}). Ours: `pseudo_masks.masks_without_background` "
              f"on the whole batch (median of {mk['repeats']} passes). Reference: the same rule per image — "
              "paint each selected map above its mean in ascending probability, then "
              "`reference.nearest_label_fill_bfs` — over "
              f"{masks['reference_images']} images ({masks['reference_seconds']:.0f} s). "
              f"{masks['unassigned_fraction']:.0%} of the pixels need the nearest-label fill; the two agree on "
              f"{masks['pixel_agreement']:.4%} of the pixels (equidistant labels may be broken differently).",
              "",
              "**4. `make reproduce`.** "
              + (f"Wall time recorded by the reproduce driver in `reproduce_timing.json` (preset "
                 f"{record['reproduce_timing']['preset']})." if record["reproduce_timing"] else
                 "Not recorded: no `reproduce_timing.json` from the reproduce driver was found next to these "
                 "results, so `reproduce_quick_seconds` is null. Run `make reproduce`, then this benchmark again.")
              + (" It was not the quick preset, so `reproduce_quick_seconds` is null."
                 if record["reproduce_timing"] and record["reproduce_timing"]["preset"] != "quick" else ""),
              "",
              "**5. GPU.** `python -m benchmarks.bench --gpu` runs benchmark 1 for ViT-B/16 at 224 (20 classes) on "
              "the CUDA device under bf16 autocast; images/s is the batch over the median kyam step time; MFU is "
              "images/s × training FLOPs per image (3 × the forward's matrix-multiply FLOPs, counted analytically "
              "by `vit_forward_flops`) over the device's dense bf16 peak (H100 SXM and H200 989 TFLOP/s, "
              "H100 PCIe 756, A100 312; `--gpu-peak-tflops` for others)."
              + ("" if record["gpu_name"] is not None else " Not measured: no GPU was lent to this session."),
              "",
              "**Noise.** The two CPU cores are shared with other work; interleaving the pairs and taking the "
              "median of per-pair ratios cancels slow drifts in load but not every burst, so single timings "
              "(in the JSON) vary more than the ratios."]
    for title, step, key in (("small preset", small, "train_step_ratio_small"), ("ViT-B/16", vitb, "train_step_ratio_vitb")):
        if "profile" in step:
            lines += ["", f"## Target missed: train step, {title}", "",
                      "torch.profiler, one step of each model, top ops by self CPU time — the ops that differ "
                      "bound the ratio:", ""] + _profile_table(step["profile"])
    if memory["ratio"] > TARGETS["class_map_memory_ratio"][1]:
        lines += ["", "## Target missed: class-map memory", "",
                  "See \"What dominates\" above: the stored class rows and the class maps at image size set the floor."]
    if "profile" in masks:
        lines += ["", "## Target missed: pseudo-masks", "",
                  f"cProfile of one batched pass over the {mk['batch_size']} images, top functions by cumulative "
                  "time — the largest entries below the call itself bound the throughput:", "",
                  "| function | calls | self | cumulative |", "|---|---|---|---|"]
        lines += [f"| `{entry['function']}` | {entry['calls']} | {entry['self_s']:.3f} s | {entry['cumulative_s']:.3f} s |"
                  for entry in masks["profile"]]
    if record.get("loader_images_per_s"):
        lines += loader_markdown(record)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks the code path in seconds")
    parser.add_argument("--out", default="results", help="folder for benchmarks.json and benchmarks.md")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    parser.add_argument("--reproduce-timing", default=None,
                        help="the reproduce driver's timing file (default <out>/reproduce_timing.json)")
    parser.add_argument("--gpu", action="store_true", help="also run the GPU benchmarks (needs CUDA)")
    parser.add_argument("--gpu-peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU, for a GPU not in the built-in table")
    parser.add_argument("--update-timing", action="store_true",
                        help="only refresh benchmark 4 (the reproduce wall time) in an existing <out>/benchmarks.json")
    parser.add_argument("--loader", action="store_true",
                        help="only measure the VOC-layout loader (images/s by workers) into <out>/benchmarks.json")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(_memory_child(json.loads(args.memory_child))), flush=True)
        return 0
    settings = SMOKE if args.smoke else FULL
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be positive, got {args.threads}")
        settings = dataclasses.replace(settings, threads=args.threads)
    out = Path(args.out)
    timing = args.reproduce_timing if args.reproduce_timing is not None else out / "reproduce_timing.json"
    previous = read_json(out / "benchmarks.json") if (out / "benchmarks.json").is_file() else {}
    if args.update_timing or args.loader:
        record = previous
        if args.update_timing:
            record.update(reproduce_timing_fields(read_reproduce_timing(timing), previous))
        if args.loader:
            record.update(loader_record(images=16, epochs=1) if args.smoke else loader_record())
    else:
        record = {**{k: v for k, v in previous.items() if k.startswith("loader_")}, **run_benchmarks(settings, reproduce_timing=timing, gpu=args.gpu, previous=previous,
                                gpu_peak_flops=None if args.gpu_peak_tflops is None else args.gpu_peak_tflops * 1e12)}
    markdown = render_markdown(record)
    write_json(out / "benchmarks.json", record)
    with atomic_write(out / "benchmarks.md") as tmp:
        tmp.write_text(markdown)
    print(f"wrote {out / 'benchmarks.json'} and {out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
