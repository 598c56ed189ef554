"""Training-time augmentation, batched: every function takes a whole float batch (B, C, H, W) and
transforms it on whatever device it lives on, drawing its random numbers from one generator.

The geometric part (flip, rotation, crop-and-resize, shift) composes into a single 2x3 matrix per
image, so a batch costs one ``grid_sample``. Random erasing, mixup and cutmix follow as batched
tensor operations, and so does the photometric part (light, contrast, gamma, blur, low resolution,
sensor noise: what real cameras do to a face that FER2013's web crops rarely show). Each step draws
random numbers only when enabled, so turning an option off reproduces the runs made before it existed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.train.config import TrainConfig

SEED = TrainConfig()  # the seed recipe: its geometric augmentation is these functions' default

def random_affine(
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    flip: float = SEED.flip,
    rotation: float = SEED.rotation,
    min_crop: float = SEED.min_crop,
    shift: float = SEED.shift,
) -> torch.Tensor:
    """``n`` random (2, 3) matrices mapping output to input coordinates in [-1, 1].

    ``flip``: probability of a horizontal flip; ``rotation``: maximum angle in degrees;
    ``min_crop``: smallest fraction of the image area a square crop keeps (placed at random);
    ``shift``: extra translation, as a fraction of the image size, in each direction.
    """
    u = torch.rand(n, 4, generator=generator, device=device)
    sign = torch.where(u[:, 0] < flip, -1.0, 1.0)
    angle = (u[:, 1] * 2 - 1) * math.radians(rotation)
    side = torch.sqrt(min_crop + (1 - min_crop) * u[:, 2])  # crop side as a fraction of the image
    # the crop's centre may move as far as keeps the crop inside the image
    offset = (torch.rand(n, 2, generator=generator, device=device) * 2 - 1) * (1 - side)[:, None]
    if shift > 0:
        offset = offset + (torch.rand(n, 2, generator=generator, device=device) * 2 - 1) * (2 * shift)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    return torch.stack(
        [torch.stack([cos * sign, -sin, offset[:, 0]], 1), torch.stack([sin * sign, cos, offset[:, 1]], 1)], 1
    )


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    flip: float = SEED.flip,
    rotation: float = SEED.rotation,
    min_crop: float = SEED.min_crop,
    shift: float = SEED.shift,
) -> torch.Tensor:
    """Flip, rotate, crop and shift a float batch (B, C, H, W) in one resample; pixels brought in
    from outside the image are 0."""
    theta = random_affine(images.shape[0], generator, images.device, flip, rotation, min_crop, shift)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erasing(
    images: torch.Tensor, p: float, generator: torch.Generator | None = None,
    area: tuple[float, float] = (0.02, 0.2), max_aspect: float = 3.0,
) -> torch.Tensor:
    """With probability ``p`` per image, fill one random rectangle (``area`` of the image, aspect up
    to ``max_aspect``) with uniform noise, as in Zhong et al. 2017; batched with masks."""
    b, _, h, w = images.shape
    u = torch.rand(b, 6, generator=generator, device=images.device)
    target = h * w * (area[0] + (area[1] - area[0]) * u[:, 0])
    log_r = math.log(max_aspect)
    aspect = torch.exp((u[:, 1] * 2 - 1) * log_r)
    eh = torch.sqrt(target * aspect).clamp(1, h)
    ew = torch.sqrt(target / aspect).clamp(1, w)
    top = (u[:, 2] * (h - eh + 1)).floor()
    left = (u[:, 3] * (w - ew + 1)).floor()
    rows = torch.arange(h, device=images.device)[None, :, None]
    cols = torch.arange(w, device=images.device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None]))
    mask = (inside & (u[:, 4] < p)[:, None, None]).unsqueeze(1)
    noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return torch.where(mask, noise, images)


# The photometric distortions, one per real-camera effect; each takes a float batch (B, C, H, W) in
# [0, 1] and a per-image strength (B,), so training draws strengths and the robustness benchmark fixes
# them. A strength of 0 leaves an image unchanged.


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1)


def brightness(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Add ``delta`` (a fraction of full scale, negative darkens) to every pixel."""
    return (x + _per_image(delta)).clamp_(0, 1)


def contrast(x: torch.Tensor, log_factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviations from its mean by ``exp(log_factor)`` (negative: flatter)."""
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * _per_image(log_factor).exp() + mean).clamp_(0, 1)


def gamma(x: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    """Raise pixels to ``exp(log_gamma)`` (positive: darker mid-tones, as an under-exposed camera)."""
    return x.clamp(min=1e-4).pow(_per_image(log_gamma).exp())


def blur(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Blend each image toward a blurred copy (two 3x3 box filters, close to a Gaussian of 1.15 px)
    by ``amount`` in [0, 1]: a defocused or moving camera. Edges repeat the border pixels."""
    y = F.avg_pool2d(F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 3, 1), 3, 1)
    return torch.lerp(x, y, _per_image(amount))


def low_resolution(x: torch.Tensor, amount: torch.Tensor, size: int = 20) -> torch.Tensor:
    """Blend each image toward a copy shrunk to ``size`` pixels and enlarged back by ``amount``: a face
    seen from far away, or upscaled from a small detection."""
    small = F.interpolate(x, size=(size, size), mode="area")
    big = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.lerp(x, big, _per_image(amount))


def sensor_noise(x: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``std`` (a fraction of full scale)."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + noise * _per_image(std)).clamp_(0, 1)


def photometric_batch(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each photometric effect, independently with probability ``p`` per image, at a random strength
    up to its limit below (signed effects in either direction); batched."""
    u = torch.rand(2, x.shape[0], 6, generator=generator, device=x.device, dtype=x.dtype)
    on = (u[0] < p).to(x.dtype)
    s = u[1] * on  # strength in [0, 1), 0 where off
    signed = (u[1] * 2 - 1) * on
    x = brightness(x, 0.25 * signed[:, 0])  # up to a quarter of full scale brighter or darker
    x = contrast(x, 0.5 * signed[:, 1])  # contrast x0.61 to x1.65
    x = gamma(x, 0.5 * signed[:, 2])  # gamma 0.61 to 1.65
    x = blur(x, s[:, 3])  # up to a full blur
    x = low_resolution(x, s[:, 4])  # up to a face seen at 20x20 pixels
    return sensor_noise(x, 0.04 * s[:, 5], generator)  # noise up to 4% of full scale


def mix_batch(
    images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, mixup: float, cutmix: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (alpha ``mixup``) or cutmix (alpha ``cutmix``; with both on, each batch picks one at
    random) of the batch with a shuffled copy of itself.

    Returns ``(images, labels_a, labels_b, lam)``; the loss is ``lam * loss(labels_a) + (1 - lam) *
    loss(labels_b)``. The mixing weight and box come from the host-side ``rng`` as plain floats, so
    nothing waits on the device.
    """
    b, _, h, w = images.shape
    perm = torch.randperm(b, generator=generator, device=images.device)
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    if not use_cutmix:
        return images * lam + images[perm] * (1 - lam), labels, labels[perm], lam
    cut_h, cut_w = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    return mixed, labels, labels[perm], 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually kept


def augment_sample(
    image: torch.Tensor, flip: float = SEED.flip, rotation: float = SEED.rotation, min_crop: float = SEED.min_crop,
    shift: float = SEED.shift,
) -> torch.Tensor:
    """The geometric augmentation for one (C, H, W) image, for per-sample ``Dataset`` pipelines
    (random numbers from the global generator, which DataLoader seeds per worker)."""
    return augment_batch(image.unsqueeze(0), None, flip, rotation, min_crop, shift)[0]
