"""Helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from ferkit.device import describe_machine


def machine(device: torch.device | None = None) -> str:
    """A one-line description of where a benchmark ran: the machine and torch's version."""
    return f"{describe_machine(device)}, torch {torch.__version__}"


def timed_median(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_kib(pid: int | str = "self") -> int | None:
    """A process's resident memory now, in KiB, from /proc (Linux); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
