"""Independent calls side by side: a pool of spawned processes (the CPU runs of a notebook's table).

A run's CPU threads are part of its config (`TrainConfig.cpu_threads`): the weights depend on them,
not on how many runs train at once. On 2 cores two 1-thread runs train ~1.5x faster than one
after the other on 2 threads (measured on the quick preset's tiny ViT: 313 ms per step each,
side by side, against 229 ms on 2 threads).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

__all__ = ["parallel_jobs", "map_in_processes"]

JOBS_ENV = "KYAM_TRAIN_JOBS"


def parallel_jobs(threads_per_call: int, *, cpu_count: int | None = None, cuda: bool = False) -> int:
    """How many calls of `threads_per_call` CPU threads fit side by side: $KYAM_TRAIN_JOBS, else
    cpu_count // threads_per_call; 1 for calls on a GPU or without a fixed thread count."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if value:
        try:
            jobs = int(value)
        except ValueError:
            raise ValueError(f"${JOBS_ENV}={value!r}: expected a whole number of processes") from None
        if jobs < 1:
            raise ValueError(f"${JOBS_ENV}={value!r}: expected 1 or more processes")
        return jobs
    if cuda or threads_per_call <= 0:
        return 1
    return max(1, (cpu_count or os.cpu_count() or 1) // threads_per_call)


def map_in_processes(fn: Callable[..., Any], calls: Sequence[dict[str, Any]], jobs: int) -> list[Any]:
    """[fn(**call) for call in calls], in `jobs` spawned processes when jobs > 1 and there are 2+ calls.

    `fn` must be importable (a module-level function). The results keep the order of `calls`; the
    first call that raised re-raises here, after the others have finished.
    """
    if jobs <= 1 or len(calls) <= 1:
        return [fn(**call) for call in calls]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(calls)), mp_context=context) as pool:
        futures = [pool.submit(fn, **call) for call in calls]
        return [future.result() for future in futures]
