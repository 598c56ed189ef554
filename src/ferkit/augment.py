"""Training-time augmentation, batched: one random affine transform per image, applied to the
whole batch at once with ``affine_grid``/``grid_sample`` on whatever device the batch lives on.

The seed recipe's flip (p 0.5), rotation (+-10 degrees) and random crop (90-100% of the area,
resized back to 48x48) compose into a single 2x3 matrix per image, so a batch costs one resample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    flip: float = 0.5,
    rotation: float = 10.0,
    min_crop: float = 0.9,
) -> torch.Tensor:
    """``n`` random (2, 3) matrices mapping output to input coordinates in [-1, 1].

    ``flip``: probability of a horizontal flip; ``rotation``: maximum angle in degrees;
    ``min_crop``: smallest fraction of the image area a square crop keeps (placed at random).
    """
    u = torch.rand(n, 4, generator=generator, device=device)
    sign = torch.where(u[:, 0] < flip, -1.0, 1.0)
    angle = (u[:, 1] * 2 - 1) * math.radians(rotation)
    side = torch.sqrt(min_crop + (1 - min_crop) * u[:, 2])  # crop side as a fraction of the image
    # the crop's centre may move as far as keeps the crop inside the image
    shift = (torch.rand(n, 2, generator=generator, device=device) * 2 - 1) * (1 - side)[:, None]
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack(
        [torch.stack([cos * sign, -sin, shift[:, 0]], 1), torch.stack([sin * sign, cos, shift[:, 1]], 1)], 1
    )
    return theta


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    flip: float = 0.5,
    rotation: float = 10.0,
    min_crop: float = 0.9,
) -> torch.Tensor:
    """Augment a float batch (B, C, H, W) in one resample; corners rotated in are filled with 0."""
    theta = random_affine(images.shape[0], generator, images.device, flip, rotation, min_crop)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_sample(
    image: torch.Tensor, flip: float = 0.5, rotation: float = 10.0, min_crop: float = 0.9
) -> torch.Tensor:
    """The same augmentation for one (C, H, W) image, for per-sample ``Dataset`` pipelines
    (random numbers from the global generator, which DataLoader seeds per worker)."""
    return augment_batch(image.unsqueeze(0), None, flip, rotation, min_crop)[0]
