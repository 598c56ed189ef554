"""Where and in what precision the network runs: device choice, bfloat16 autocast, memory layout,
and the machine described for the records that quote its figures."""

from __future__ import annotations

import os
import platform

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:  # torch's message lists every device type it was built to know
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: CUDA GPUs from Ampere on, CPUs with
    AVX512-BF16 or AMX. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bfloat16 (with channels_last): ``auto`` means where the device has
    bf16 arithmetic (:func:`native_bf16`)."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def channels_last(layout: str, precision: str, device: torch.device) -> bool:
    """Whether training runs the model and its batches channels_last: ``auto`` means with bf16 and on
    every CPU, where oneDNN's convolutions are faster in that layout in fp32 too
    (``benchmarks/train_speed.py --vs contiguous``; reports/cpu/README.md)."""
    if layout != "auto":
        return layout == "channels_last"
    return uses_bf16(precision, device) or device.type == "cpu"


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision that runs on ``device``: ``bf16`` or ``fp32`` (``auto`` resolved)."""
    return "bf16" if uses_bf16(precision, device) else "fp32"


def describe_machine(device: torch.device | None = None) -> str:
    """This machine in a few words, for records of what ran where: architecture, cores, CPU model
    (from /proc/cpuinfo, where there is one) and the GPU of a CUDA ``device``."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        cpu = ""
    text = f"{platform.machine()}, {os.cpu_count()} cores{', ' + cpu if cpu else ''}"
    if device is not None and device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text
