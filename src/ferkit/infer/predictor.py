"""Emotion recognition on images: find faces, crop them the FER2013 way, classify them in batches.

    from ferkit.infer.predictor import EmotionPredictor
    predictor = EmotionPredictor()                       # the bundled model
    for face in predictor.predict_frame(frame_bgr):      # detect + classify every face
        print(face.box, face.emotion, face.probabilities)
    emotion, index, probs = predictor.predict_emotion_from_frame(frame_bgr, (x, y, w, h))

On the CPU, with ONNX Runtime installed (``pip install 'ferkit[onnx]'``), the network runs there:
the bundled model as its int8 export, any other checkpoint as an fp32 export made once and cached.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ferkit.data import IMAGE_SIZE
from ferkit.device import resolve_device
from ferkit.infer.backends import BACKENDS, bundled_model_path, load_classifier
from ferkit.infer.detection import (
    DEFAULT_DETECTOR,
    Box,
    FaceDetector,
    HaarDetector,
    detect_faces,
    get_detector,
    to_gray,
)

__all__ = ["BACKENDS", "Box", "EmotionPredictor", "FacePrediction", "crop_face", "detect_faces", "resize_face",
           "to_gray"]

@dataclass(frozen=True)
class FacePrediction:
    """One face of a frame: where it is, what it shows, and (from a pipeline) who it is over time."""

    box: Box
    emotion: str
    index: int
    probabilities: np.ndarray  # one probability per class, in the model's class order
    track_id: int | None = None  # stable across the frames of a video (FacePipeline); None for stills


def crop_face(gray: np.ndarray, box: Box, margin: float = HaarDetector.margin) -> np.ndarray:
    """A square 48x48 crop centred on ``box``, its side the box's longer side widened by ``margin``
    of it on each side (narrowed if negative; ``benchmarks/crop_margin.py`` measures the margin that
    frames each detector's boxes like FER2013); parts beyond the frame's edge repeat the edge pixels."""
    if not -0.5 < margin:
        raise ValueError(f"margin must be above -0.5, got {margin}")
    x, y, w, h = (int(v) for v in box)
    height, width = gray.shape[:2]
    if w <= 0 or h <= 0:
        raise ValueError(f"box {box} has zero or negative size")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"box {box} lies outside the {width}x{height} frame")
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + max(1, int(round(side))), y0 + max(1, int(round(side)))
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return resize_face(gray[y0:y1, x0:x1])


def resize_face(face: np.ndarray) -> np.ndarray:
    """A grayscale face of any size as 48x48 uint8."""
    face = to_gray(face)
    if face.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return face
    shrinking = face.shape[0] > IMAGE_SIZE or face.shape[1] > IMAGE_SIZE
    return cv2.resize(face, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class EmotionPredictor:
    """A trained model ready for faces: loads a checkpoint safely (weights only) once.

    ``checkpoint``: a ferkit checkpoint, weights file or ONNX export; ``None`` loads the bundled model.
    ``device``: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    ``backend``: ``"auto"`` (ONNX Runtime on the CPU when installed), ``"torch"`` or ``"onnx"``.
    ``margin``: the crop margin for boxes passed in (default: the one that suits Haar boxes).
    ``threads``: ONNX Runtime's threads (default: one per core).
    """

    def __init__(
        self, checkpoint: str | os.PathLike | None = None, device: str = "auto", margin: float | None = None,
        backend: str = "auto", threads: int | None = None,
    ) -> None:
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else bundled_model_path()
        self.device = resolve_device(device)
        self.classifier = load_classifier(self.checkpoint_path, backend, self.device, threads)
        self.backend: str = self.classifier.name
        self.class_names: tuple[str, ...] = self.classifier.class_names
        self.margin = HaarDetector.margin if margin is None else margin

    def predict_crops(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) for faces already cropped the FER2013 way (grayscale or
        BGR arrays of any size; resized to 48x48), run through the network as one batch."""
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        batch = np.stack([resize_face(f) for f in faces])[:, None].astype(np.float32) / 255
        logits = self.classifier(batch)
        return torch.softmax(torch.from_numpy(logits).float(), dim=1).numpy()

    def predict_faces(
        self, frame: np.ndarray, boxes: Sequence[Box], margin: float | None = None
    ) -> list[tuple[str, int, np.ndarray]]:
        """``(emotion, index, probabilities)`` for each box of one frame, in one batch."""
        gray = to_gray(frame)
        margin = self.margin if margin is None else margin
        probs = self.predict_crops([crop_face(gray, b, margin) for b in boxes])
        return [(self.class_names[int(p.argmax())], int(p.argmax()), p) for p in probs]

    def predict_emotion_from_frame(self, frame_bgr: np.ndarray, box: Box) -> tuple[str, int, np.ndarray]:
        """Emotion name, class index and class probabilities of the face at ``box = (x, y, w, h)``."""
        return self.predict_faces(frame_bgr, [box])[0]

    def predict_frame(
        self, frame: np.ndarray, detector: FaceDetector | str = DEFAULT_DETECTOR, detect_scale: float = 1.0
    ) -> list[FacePrediction]:
        """Detect every face in ``frame`` (with the named detector, or one made by
        :func:`ferkit.infer.detection.create_detector`; on a copy shrunk by ``detect_scale``) and classify
        them all, cropped from the full frame with the detector's margin."""
        detector = get_detector(detector) if isinstance(detector, str) else detector
        boxes = detector(frame, detect_scale)
        results = self.predict_faces(frame, boxes, detector.margin)
        return [FacePrediction(b, e, i, p) for b, (e, i, p) in zip(boxes, results, strict=True)]
