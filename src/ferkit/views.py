"""Test-time views of a batch of faces, and the one way their outputs become one answer.

    views = tta_views(batch, "flip")                   # [the batch, its mirror]
    logits = view_logits(model, images, "flip")        # (V, N, K): a model's logits for every view
    probabilities = average_views(logits, temperature) # (N, K): softmax(logits / T), averaged over views

Every consumer (``EmotionPredictor``, evaluation, calibration, training's validation, ``ferkit
teach``) goes through :func:`average_views`: each view's logits are divided by the model's
temperature, turned into probabilities, and the views' probabilities averaged. So a temperature
fitted on a set of views (:func:`ferkit.calibration.fit_temperature` on ``view_logits``) is the one
users get with those views.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ferkit.defaults import TTA_MODES, TTA_TRIMS


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The test-time views of a batch (N, C, H, W) under one of ``TTA_MODES`` (see ``TTA_TRIMS``):
    all crops first, then their mirrors."""
    if tta not in TTA_TRIMS:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if tta == "none":
        return [x]
    size = x.shape[-1]
    crops = []
    for trim in TTA_TRIMS[tta]:
        if trim == 0:
            crops.append(x)
            continue
        crop, c = size - trim, trim // 2
        for i, j in ((0, 0), (0, trim), (trim, 0), (trim, trim), (c, c)):
            v = x[..., i : i + crop, j : j + crop]
            crops.append(F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False))
    return crops + [v.flip(-1) for v in crops]


def num_views(tta: str) -> int:
    """How many views :func:`tta_views` makes under ``tta``."""
    if tta not in TTA_TRIMS:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    return max(1, 2 * sum(1 if trim == 0 else 5 for trim in TTA_TRIMS[tta]))


def average_views(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> torch.Tensor | np.ndarray:
    """Probabilities (N, K) of logits (N, K), or of (V, N, K) for V views of each face: each view's
    ``softmax(logits / temperature)``, averaged over the views. Numpy in, numpy out (float64 stays
    float64)."""
    t = torch.as_tensor(logits)
    if not t.is_floating_point():
        t = t.float()
    p = (t / temperature).softmax(-1)
    p = p.mean(0) if p.ndim == 3 else p
    return p.numpy() if isinstance(logits, np.ndarray) else p


@torch.no_grad()
def view_logits(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    tta: str = "none",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """A model's own logits (V, N, K), float32 on the CPU, for each view of ``tta`` of uint8
    (N, 1, 48, 48) or float [0, 1] images, in batches of ``batch_size`` faces (all of a batch's
    views in one call). ``bf16``: autocast to bfloat16 with channels_last. ``progress``: a bar."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    device = torch.device(device)
    v = num_views(tta)
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="scoring", unit="batch", disable=not progress, leave=False):
        x = images[i : i + batch_size].to(device, non_blocking=True)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        x = torch.cat(tta_views(x, tta))
        if bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            scores = model(x).float()
        out.append(scores.reshape(v, -1, scores.shape[-1]))
    if not out:
        return torch.empty(v, 0, 0)
    return torch.cat(out, 1).cpu()  # one copy back: the host waits for the device once
