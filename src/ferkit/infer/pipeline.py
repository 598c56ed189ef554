"""The one frame-to-faces pipeline behind every entry point (photos, folders, videos, webcams).

    pipeline = FacePipeline(EmotionPredictor())  # YuNet, every 3rd frame at half size, 5-frame smoothing
    for frame in frames:
        for face in pipeline.process(frame):     # Face with a stable track_id
            print(face.track_id, face.box, face.emotion, face.probabilities)
    faces = pipeline.process_image(photo)       # a still: no tracking, no smoothing

The detector dominates the cost of a frame, so it is scheduled: it runs on every ``detect_every``-th
frame (on a copy shrunk by ``detect_scale``), and in between each face is followed by matching its
last patch near its last position. Every frame's faces are classified, as one batch.
"""

from __future__ import annotations

import numpy as np

from ferkit.defaults import DETECT_EVERY, DETECT_SCALE, SMOOTHING
from ferkit.infer.detection import DEFAULT_DETECTOR, FaceDetector, get_detector, to_gray
from ferkit.infer.predictor import EmotionPredictor, Face
from ferkit.infer.tracking import FaceTracker, Track, anchor, follow, is_cut, remember, scene_signature


class FacePipeline:
    """Detect, track, classify and smooth, frame after frame.

    ``predictor``: an :class:`EmotionPredictor` (default: the bundled model).
    ``detector``: a name (``haar``, ``yunet``) or a :class:`FaceDetector`.
    ``detect_every``: run the detector on every N-th frame, follow faces in between (1: every frame).
    ``detect_scale``: shrink frames by this factor before detecting (1: full size).
    ``smoothing``: EMA window in frames for each face's probabilities (1: none).
    The defaults are :mod:`ferkit.defaults`' (``DETECT_EVERY``, ``DETECT_SCALE``, ``SMOOTHING``: what they
    keep and cost is written there).
    """

    def __init__(
        self,
        predictor: EmotionPredictor | None = None,
        detector: FaceDetector | str = DEFAULT_DETECTOR,
        detect_every: int = DETECT_EVERY,
        detect_scale: float = DETECT_SCALE,
        smoothing: float = SMOOTHING,
        iou_threshold: float = 0.3,
        max_missed: int = 5,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every}")
        if not 0 < detect_scale <= 1:
            raise ValueError(f"detect_scale must be in (0, 1], got {detect_scale}")
        self.predictor = predictor or EmotionPredictor()
        self.detector = get_detector(detector) if isinstance(detector, str) else detector
        self.detect_every, self.detect_scale = detect_every, detect_scale
        self.tracker = FaceTracker(iou_threshold, max_missed, smoothing)
        self.frame_index = 0
        self._visible: list[Track] = []  # the tracks shown on the last frame
        self._signature: np.ndarray | None = None  # the last frame's scene signature, to see cuts

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.predictor.class_names

    def process(self, frame: np.ndarray) -> list[Face]:
        """The faces of the next frame of a sequence, each with its track id and smoothed
        probabilities (``emotion`` and ``index`` follow the smoothed values).

        A hard cut (the frame's gray-level histogram unlike the last one's) ends every track and
        runs the detector at once. Between detections a face is followed only while its patch still
        looks like the face the detector last confirmed, and a face the detector misses is followed
        until the next detection at most."""
        gray = to_gray(frame)
        signature = scene_signature(gray)
        cut = is_cut(self._signature, signature)
        self._signature = signature
        if cut:
            self.tracker.end_tracks()
            self._visible = []
        if cut or self.frame_index % self.detect_every == 0 or not self.tracker.tracks:
            detections = self.detector.detect(frame, self.detect_scale)
            found, missing = self.tracker.update([d.box for d in detections], [d.landmarks for d in detections])
            for track in found:
                anchor(gray, track)
            # A face the detector missed this once stays on screen if its patch is still there.
            visible = found + [t for t in missing if t.missed == 1 and follow(gray, t)]
        else:
            visible = [t for t in self._visible if follow(gray, t)]
        self._visible = visible
        self.frame_index += 1
        raw = self.predictor.predict_faces(gray, [t.box for t in visible], self.detector.margin,
                                           [t.landmarks for t in visible])
        faces = []
        for track, (_, _, probabilities) in zip(visible, raw, strict=True):
            remember(gray, track)
            smoothed = self.tracker.smooth(track, probabilities)
            faces.append(Face(track.box, self.predictor.label(smoothed), int(smoothed.argmax()), smoothed,
                              self.class_names, track.track_id, landmarks=track.landmarks))
        return faces

    def process_image(self, image: np.ndarray, max_side: int | None = None) -> list[Face]:
        """The faces of one still image (ids are face indices, largest first). Detection runs at full
        size, or on a copy whose longer side is ``max_side`` pixels if the image is larger."""
        longest = max(image.shape[:2]) if isinstance(image, np.ndarray) and image.ndim >= 2 else 0
        scale = min(1.0, max_side / longest) if max_side and longest else 1.0
        return self.predictor.predict_frame(image, self.detector, scale)

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self.tracker.reset()
        self.frame_index = 0
        self._visible = []
        self._signature = None
