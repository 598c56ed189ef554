"""Faces framed the way FER2013 frames them: upright, eyes and mouth where FER2013's are.

    from ferkit.infer.align import align_face
    face48 = align_face(gray, detection.landmarks)   # 48x48 uint8, rotated upright and scaled

A detector's five landmarks (eyes, nose tip, mouth corners, as YuNet gives them) are mapped by the
least-squares similarity (rotation, scale, shift) onto where the same points sit in a FER2013 image,
and the face is resampled through it. A box crop (:func:`ferkit.infer.predictor.crop_face`) keeps a
tilted head tilted and frames faces by the box alone; this frames them by their features.
"""

from __future__ import annotations

import cv2
import numpy as np

from ferkit.data import IMAGE_SIZE

# Where YuNet puts the five points on FER2013 faces (x, y in a 48x48 image): the median over 1,337 PublicTest faces
# enlarged 3x (benchmarks/align.py --template); the eyes and mouth corners sit symmetrically about x = 23.5.
FER2013_LANDMARKS = np.array([[14.67, 18.33], [32.33, 18.33], [24.0, 27.67], [16.33, 35.67], [30.67, 35.67]])
# The points spread 1.2x about the centre (the face 20% closer than FER2013 frames it): of 1.0, 1.1 and 1.2, the best
# mean of FER2013 PublicTest enlarged, muxspace-dev and ckplus-dev, the rule of reports/inference/align/README.md.
ZOOM = 1.2
TARGET = ((FER2013_LANDMARKS - (IMAGE_SIZE - 1) / 2) * ZOOM + (IMAGE_SIZE - 1) / 2).astype(np.float64)


def similarity(points: np.ndarray, target: np.ndarray = TARGET) -> np.ndarray:
    """The 2x3 similarity matrix (rotation, uniform scale, shift) that maps ``points`` (N, 2) onto
    ``target`` (N, 2) in the least-squares sense."""
    points, target = np.asarray(points, np.float64), np.asarray(target, np.float64)
    x, y = points[:, 0], points[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    # x' = a x - b y + tx,  y' = b x + a y + ty
    rows = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.concatenate([target[:, 0], target[:, 1]]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def alignment(landmarks) -> np.ndarray | None:
    """The frame-to-48x48 matrix for a face's five landmarks, or None where they cannot frame a face
    (missing, fewer than five, or all in one spot)."""
    if landmarks is None or len(landmarks) < len(TARGET):
        return None
    points = np.asarray(landmarks, np.float64)[: len(TARGET)]
    if np.ptp(points, axis=0).max() < 2:
        return None
    return similarity(points)


def warp_face(gray: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The 48x48 uint8 face that ``matrix`` (frame to 48x48) cuts from a grayscale frame. The part of
    the frame it covers is shrunk first with area averaging (no aliasing from a large face), and
    parts beyond the frame's edge repeat the edge pixels, as :func:`ferkit.infer.predictor.crop_face` does."""
    height, width = gray.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    corners = inverse @ np.array([[0, IMAGE_SIZE, 0, IMAGE_SIZE], [0, 0, IMAGE_SIZE, IMAGE_SIZE], [1, 1, 1, 1]])
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in corners.min(1))
    x1, y1 = (min(n, int(np.ceil(v)) + 1) for v, n in zip(corners.max(1), (width, height), strict=True))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the face lies wholly outside the frame: take its nearest edge
        x0, y0 = min(max(0, x0), width - 2), min(max(0, y0), height - 2)
        x1, y1 = x0 + 2, y0 + 2
    patch = gray[y0:y1, x0:x1]
    m = matrix.astype(np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # into the patch's coordinates
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # output pixels per frame pixel
    if scale < 1:
        w, h = max(2, round(patch.shape[1] * scale)), max(2, round(patch.shape[0] * scale))
        fx, fy = w / patch.shape[1], h / patch.shape[0]
        patch = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)
        # a patch pixel centre x sits at (x + 0.5) / fx - 0.5 of the original
        m = m @ np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
    return cv2.warpAffine(patch, m, (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_face(gray: np.ndarray, landmarks) -> np.ndarray:
    """The face with these five landmarks, upright and framed like FER2013, as 48x48 uint8."""
    matrix = alignment(landmarks)
    if matrix is None:
        raise ValueError(f"landmarks {landmarks!r} cannot frame a face: five distinct (x, y) points are needed")
    return warp_face(gray, matrix)
