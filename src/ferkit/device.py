"""Where and in what precision the network runs: device choice and bfloat16 autocast."""

from __future__ import annotations

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


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision that runs on ``device``: ``bf16`` or ``fp32`` (``auto`` resolved)."""
    return "bf16" if uses_bf16(precision, device) else "fp32"
