"""Keeping faces apart over time: identities by box overlap, probabilities smoothed per identity.

    tracker = FaceTracker(smoothing=5)
    tracks = tracker.update(boxes)              # on frames where the detector ran
    tracker.smooth(track, probabilities)        # exponential moving average per track
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ferkit.infer.detection import Box, shrink

TEMPLATE_WIDTH = 32  # faces are followed between detections at this width: cheap, and enough detail
ZOOMS = (1 / 1.08, 1.0, 1.08)  # sizes tried when following: a face may grow or shrink between frames


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One face followed over time."""

    track_id: int
    box: Box
    probabilities: np.ndarray | None = None  # smoothed class probabilities
    missed: int = 0  # detection rounds in a row that did not find it
    template: np.ndarray | None = field(default=None, repr=False)  # its grayscale patch, for following
    template_offset: tuple[int, int] = (0, 0)  # where the patch starts inside the box (a face cut by the edge)


class FaceTracker:
    """Gives each face a stable id across frames and smooths its probabilities.

    ``iou_threshold``: the overlap a detection needs with a track's last box to continue it.
    ``max_missed``: detection rounds a track survives without being found (it keeps its id if the
    face comes back within them). ``smoothing``: the EMA window in frames (1: no smoothing).
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, smoothing: float = 5) -> None:
        if smoothing < 1:
            raise ValueError(f"smoothing window must be at least 1 frame, got {smoothing}")
        self.iou_threshold, self.max_missed = iou_threshold, max_missed
        self.alpha = 2 / (smoothing + 1)  # the usual EMA weight for a window of that many frames
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, boxes: Sequence[Box]) -> tuple[list[Track], list[Track]]:
        """Match a frame's detections to the tracks, greedily by overlap. Returns the tracks found
        in this frame (in the order of ``boxes``) and the live tracks it did not find."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        track_of: dict[int, Track] = {}
        used: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.iou_threshold:
                break
            if ti in used or bi in track_of:
                continue
            used.add(ti)
            track_of[bi] = self.tracks[ti]
        found = []
        for bi, box in enumerate(boxes):
            track = track_of.get(bi)
            if track is None:
                track = Track(self._next_id, tuple(box))
                self._next_id += 1
                self.tracks.append(track)
            track.box, track.missed = tuple(box), 0
            found.append(track)
        found_ids = {t.track_id for t in found}
        missing = [t for t in self.tracks if t.track_id not in found_ids]
        for track in missing:
            track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return found, [t for t in missing if t.missed <= self.max_missed]

    def smooth(self, track: Track, probabilities: np.ndarray) -> np.ndarray:
        """Fold a new measurement into the track's exponential moving average and return it."""
        if track.probabilities is None:
            track.probabilities = probabilities.astype(np.float32)
        else:
            track.probabilities = (1 - self.alpha) * track.probabilities + self.alpha * probabilities
        return track.probabilities

    def reset(self) -> None:
        self.tracks, self._next_id = [], 0


def follow(gray: np.ndarray, track: Track, min_score: float = 0.5) -> bool:
    """Move ``track.box`` to where its template matches best in ``gray``, searching around the old
    box at three sizes (the face may come closer or move away): the cheap step between detections.
    Returns False when the face is lost."""
    if track.template is None:
        return False
    x, y, w, h = track.box
    height, width = gray.shape[:2]
    scale = min(1.0, TEMPLATE_WIDTH / max(w, 1))
    pad_x, pad_y = w // 2, h // 2
    x0, y0 = max(0, x - pad_x), max(0, y - pad_y)
    x1, y1 = min(width, x + w + pad_x), min(height, y + h + pad_y)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return False
    region = shrink(gray[y0:y1, x0:x1], scale)
    best = (min_score, None)
    for zoom in ZOOMS:
        template = track.template if zoom == 1 else cv2.resize(track.template, None, fx=zoom, fy=zoom)
        if template.shape[0] > region.shape[0] or template.shape[1] > region.shape[1] or min(template.shape) < 4:
            continue
        _, score, _, (bx, by) = cv2.minMaxLoc(cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED))
        if score > best[0]:
            dx, dy = (round(v * zoom) for v in track.template_offset)
            best = (score, (x0 + round(bx / scale) - dx, y0 + round(by / scale) - dy, round(w * zoom), round(h * zoom)))
    if best[1] is None:
        return False
    track.box = best[1]
    return True


def remember(gray: np.ndarray, track: Track) -> None:
    """Store the track's current patch (the part inside the frame) as the template that
    :func:`follow` looks for next."""
    x, y, w, h = track.box
    height, width = gray.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if min(x1 - x0, y1 - y0) < 8:
        track.template = None  # too little of it is visible to follow: wait for the next detection
        return
    scale = min(1.0, TEMPLATE_WIDTH / w)
    track.template = shrink(gray[y0:y1, x0:x1], scale)
    track.template_offset = (x0 - x, y0 - y)
