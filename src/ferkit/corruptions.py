"""What real cameras and detectors do to a face, at three severities, for the robustness benchmark.

    faces = corrupt(pixels, "motion_blur", severity=2, seed=0)   # uint8 (N, 48, 48) in, the same out

Every corruption keeps the shape, dtype (uint8) and range, and draws its random choices (a
direction, a position) from ``seed``, so a benchmark run is repeatable. Training's photometric
augmentation (``train.augment``) covers the light and sharpness effects; framing, rotation and
occlusion are the detector's and the world's.
"""

from __future__ import annotations

import cv2
import numpy as np

SEVERITIES = (1, 2, 3)


def _brightness(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    sign = rng.choice([-1.0, 1.0], size=(len(x), 1, 1))  # darker or brighter, per face
    return x + sign * (0.15, 0.3, 0.45)[s - 1]


def _contrast(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean((1, 2), keepdims=True)
    return (x - mean) * (0.65, 0.45, 0.3)[s - 1] + mean  # a flat, hazy or backlit picture


def _gamma(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    sign = rng.choice([-1.0, 1.0], size=(len(x), 1, 1))
    return np.clip(x, 0, 1) ** np.exp(sign * (0.3, 0.6, 0.9)[s - 1])  # under- or over-exposed mid-tones


def _gaussian_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.8, 1.4, 2.0)[s - 1]
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE) for f in x])


def _motion_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    length = (3, 5, 7)[s - 1]
    out = []
    for face, angle in zip(x, rng.uniform(0, 180, len(x)), strict=True):
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1 / length  # a horizontal line, then turned
        turn = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(angle), 1.0)
        kernel = cv2.warpAffine(kernel, turn, (length, length))
        out.append(cv2.filter2D(face, -1, kernel / max(kernel.sum(), 1e-6), borderType=cv2.BORDER_REPLICATE))
    return np.stack(out)


def _sensor_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0, (0.03, 0.06, 0.1)[s - 1], x.shape)


def _jpeg(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    quality = (30, 15, 8)[s - 1]
    faces = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    coded = [cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)
             for f in faces]
    return np.stack(coded).astype(np.float32) / 255


def _low_resolution(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    size = (24, 16, 12)[s - 1]  # the face as a far camera or a small detection saw it
    side = x.shape[-1]
    return np.stack([cv2.resize(cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA), (side, side),
                                interpolation=cv2.INTER_LINEAR) for f in x])


def _warp(x: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    side = x.shape[-1]
    return np.stack([cv2.warpAffine(f, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for f, m in zip(x, matrices, strict=True)])


def _framing(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """The detector's box a little larger or smaller and off centre: zoom in or out, shift."""
    zoom, shift = (0.07, 0.13, 0.2)[s - 1], (0.03, 0.06, 0.1)[s - 1]
    side = x.shape[-1]
    matrices = []
    for z, dx, dy in zip(rng.choice([-1, 1], len(x)) * zoom, *rng.uniform(-shift, shift, (2, len(x))), strict=True):
        m = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), 0.0, 1 + z)
        m[:, 2] += (dx * side, dy * side)
        matrices.append(m)
    return _warp(x, matrices)


def _rotation(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    side = x.shape[-1]
    angles = rng.choice([-1, 1], len(x)) * (8, 16, 25)[s - 1]
    return _warp(x, [cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), float(a), 1.0) for a in angles])


def _occlusion(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """A flat, slightly textured patch (a hand, a mask, a cup) over part of the face."""
    out = x.copy()
    side = x.shape[-1]
    area = (0.1, 0.2, 0.3)[s - 1]
    for face in out:
        h = int(round(side * np.sqrt(area) * rng.uniform(0.7, 1.3)))
        w = min(side, int(round(side * side * area / max(h, 1))))
        h = min(side, h)
        top = rng.integers(min(side // 4, side - h), side - h + 1)  # rarely over the eyes
        left = rng.integers(0, side - w + 1)
        face[top:top + h, left:left + w] = rng.uniform(0.2, 0.8) + rng.normal(0, 0.03, (h, w))
    return out


CORRUPTIONS = {
    "brightness": _brightness, "contrast": _contrast, "gamma": _gamma, "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur, "sensor_noise": _sensor_noise, "jpeg": _jpeg, "low_resolution": _low_resolution,
    "framing": _framing, "rotation": _rotation, "occlusion": _occlusion,
}


def corrupt(faces: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``faces`` (N, H, W) uint8 under one of :data:`CORRUPTIONS` at ``severity`` 1-3; deterministic
    for a given ``seed``."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {tuple(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    faces = np.asarray(faces)
    if faces.ndim != 3 or faces.dtype != np.uint8:
        raise ValueError(f"faces must be uint8 (N, H, W), got {faces.dtype} {faces.shape}")
    x = faces.astype(np.float32) / 255
    out = CORRUPTIONS[name](x, severity, np.random.default_rng(seed))
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
