"""Keeping faces apart over time: identities by box overlap, probabilities smoothed per identity.

    tracker = FaceTracker(smoothing=5)
    tracks = tracker.update(boxes, landmarks)   # on frames where the detector ran
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
ANCHOR_SIZE = 24  # side of the patch a detection confirmed, that followed patches are compared with
ANCHOR_LIKENESS = 0.4  # the correlation with it a followed patch keeps, or the face is dropped
CUT_CORRELATION = 0.5  # histograms of consecutive frames correlating less than this: a new shot


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
    anchor: np.ndarray | None = field(default=None, repr=False)  # its patch when a detection last confirmed it
    points: np.ndarray | None = field(default=None, repr=False)  # its landmarks as fractions of the box, from detection

    @property
    def landmarks(self) -> tuple[tuple[int, int], ...] | None:
        """The landmarks the detector last gave, moved and scaled with the box since (None: none given)."""
        if self.points is None:
            return None
        x, y, w, h = self.box
        return tuple((int(round(x + u * w)), int(round(y + v * h))) for u, v in self.points)


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

    def update(self, boxes: Sequence[Box], landmarks: Sequence | None = None) -> tuple[list[Track], list[Track]]:
        """Match a frame's detections to the tracks, greedily by overlap. Returns the tracks found
        in this frame (in the order of ``boxes``) and the live tracks it did not find. ``landmarks``
        (one entry per box, or None) are kept with each track, relative to its box."""
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
            track.points = _relative(box, None if landmarks is None else landmarks[bi])
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

    def end_tracks(self) -> None:
        """End every track (a new shot); faces found later get new ids."""
        self.tracks = []

    def reset(self) -> None:
        """Forget everything (a new video): ids start again from 0."""
        self.tracks, self._next_id = [], 0


def _relative(box: Box, landmarks) -> np.ndarray | None:
    """Landmarks (x, y) as fractions of the box's width and height from its corner."""
    if landmarks is None:
        return None
    x, y, w, h = box
    return (np.asarray(landmarks, np.float64) - (x, y)) / (max(w, 1), max(h, 1))


def follow(gray: np.ndarray, track: Track, min_score: float = 0.5, min_likeness: float = ANCHOR_LIKENESS) -> bool:
    """Move ``track.box`` to where its template matches best in ``gray``, searching around the old
    box at three sizes (the face may come closer or move away): the cheap step between detections.
    Returns False when the face is lost: nothing matches the last patch by ``min_score``, or what
    matches no longer looks like the face the detector last confirmed (``min_likeness`` against its
    anchor patch): a template drifting onto a collar or a wall stops there."""
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
    if best[1] is None or not _looks_like(gray, best[1], track.anchor, min_likeness):
        return False
    track.box = best[1]
    return True


def _looks_like(gray: np.ndarray, box: Box, anchor: np.ndarray | None, min_likeness: float) -> bool:
    """Whether the patch at ``box`` still matches ``anchor`` (normalised correlation, same size)."""
    if anchor is None:
        return True
    x, y, w, h = box
    height, width = gray.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if min(x1 - x0, y1 - y0) < 4:
        return False
    patch = cv2.resize(gray[y0:y1, x0:x1], (anchor.shape[1], anchor.shape[0]), interpolation=cv2.INTER_AREA)
    return float(cv2.matchTemplate(patch, anchor, cv2.TM_CCOEFF_NORMED).max()) >= min_likeness


def anchor(gray: np.ndarray, track: Track) -> None:
    """Remember the track's patch as the face a detection just confirmed (what :func:`follow`
    compares later patches with)."""
    x, y, w, h = track.box
    height, width = gray.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    track.anchor = None if min(x1 - x0, y1 - y0) < 8 else cv2.resize(gray[y0:y1, x0:x1], (ANCHOR_SIZE, ANCHOR_SIZE),
                                                                      interpolation=cv2.INTER_AREA)


def scene_signature(gray: np.ndarray) -> np.ndarray:
    """A frame's gray-level histogram (32 bins, of a 64x48 thumbnail): cheap, and unmoved by motion
    within a shot."""
    small = cv2.resize(gray, (64, 48), interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([small], [0], None, [32], [0, 256])
    return cv2.normalize(hist, hist).flatten()


def is_cut(before: np.ndarray | None, after: np.ndarray) -> bool:
    """Whether two frames' :func:`scene_signature` differ like two shots (a hard cut)."""
    return before is not None and cv2.compareHist(before, after, cv2.HISTCMP_CORREL) < CUT_CORRELATION


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
