"""Helpers shared by the benchmarks."""

from __future__ import annotations

import os
import platform

import torch


def machine(device: torch.device | None = None) -> str:
    """A one-line description of where a benchmark ran."""
    text = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    if device is not None and device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text
