"""Emotion recognition on images: find faces, crop them the FER2013 way, classify them in batches.

    from ferkit.inference import EmotionPredictor
    predictor = EmotionPredictor()                       # the bundled model
    for face in predictor.predict_frame(frame_bgr):      # detect + classify every face
        print(face.box, face.emotion, face.probabilities)
    emotion, index, probs = predictor.predict_emotion_from_frame(frame_bgr, (x, y, w, h))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from ferkit.checkpoint import load_checkpoint, model_from_checkpoint
from ferkit.data import IMAGE_SIZE
from ferkit.model import resolve_device

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
BUNDLED_MODEL = Path(__file__).parent / "weights" / "fer_resnet18_cpu_fp16.pt"
# Extra context around a detector box on each side, as a fraction of the box size. Haar boxes are
# tight around eyes and mouth; FER2013 faces show a little more of the head.
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True)
class FacePrediction:
    box: Box
    emotion: str
    index: int
    probabilities: np.ndarray  # one probability per class, in the model's class order


def bundled_model_path() -> Path:
    """The model that ships with ferkit: the ``cpu`` recipe's run in ``reports/cpu``, in fp16."""
    if not BUNDLED_MODEL.is_file():
        raise FileNotFoundError(f"the bundled model {BUNDLED_MODEL} is missing; pass a checkpoint path")
    return BUNDLED_MODEL


def to_gray(frame: np.ndarray) -> np.ndarray:
    """Any common frame layout as 8-bit grayscale: BGR, BGRA, gray (2-D or one channel), uint8,
    uint16 or float in [0, 1]."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0:
        raise ValueError(f"empty frame (shape {frame.shape})")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype.kind == "f":
        frame = (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise TypeError(f"frame dtype {frame.dtype} not supported (uint8, uint16 or float in [0, 1])")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"frame shape {frame.shape} is not an image (H x W, H x W x 1, 3 or 4)")


@lru_cache(maxsize=1)
def _haar_cascade() -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load OpenCV's Haar cascade from {path}")
    return cascade


def detect_faces(frame: np.ndarray, min_size: int = 30) -> list[Box]:
    """All frontal faces OpenCV's Haar cascade finds, as ``(x, y, w, h)``, largest first."""
    found = _haar_cascade().detectMultiScale(
        to_gray(frame), scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size)
    )
    boxes = [tuple(int(v) for v in b) for b in found]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def crop_face(gray: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """A square 48x48 crop centred on ``box``, widened by ``margin`` on each side; parts beyond the
    frame's edge are filled by repeating the edge pixels."""
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

    ``checkpoint``: a ferkit checkpoint or weights file; ``None`` loads the bundled model.
    ``device``: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    """

    def __init__(
        self, checkpoint: str | os.PathLike | None = None, device: str = "auto", margin: float = DEFAULT_MARGIN
    ) -> None:
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else bundled_model_path()
        ckpt = load_checkpoint(self.checkpoint_path)
        self.device = resolve_device(device)
        self.model = model_from_checkpoint(ckpt, self.checkpoint_path).to(self.device).eval()
        self.class_names: tuple[str, ...] = tuple(ckpt["class_names"])
        self.val_accuracy: float | None = ckpt.get("val_accuracy")
        self.margin = margin

    @torch.no_grad()
    def predict_crops(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) for faces already cropped the FER2013 way (grayscale or
        BGR arrays of any size; resized to 48x48), run through the network as one batch."""
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        batch = np.stack([resize_face(f) for f in faces])[:, None]
        x = torch.from_numpy(batch).to(self.device).float().div_(255)
        return torch.softmax(self.model(x).float(), dim=1).cpu().numpy()

    def predict_faces(self, frame: np.ndarray, boxes: Sequence[Box]) -> list[tuple[str, int, np.ndarray]]:
        """``(emotion, index, probabilities)`` for each box of one frame, in one batch."""
        gray = to_gray(frame)
        probs = self.predict_crops([crop_face(gray, b, self.margin) for b in boxes])
        return [(self.class_names[int(p.argmax())], int(p.argmax()), p) for p in probs]

    def predict_emotion_from_frame(self, frame_bgr: np.ndarray, box: Box) -> tuple[str, int, np.ndarray]:
        """Emotion name, class index and class probabilities of the face at ``box = (x, y, w, h)``."""
        return self.predict_faces(frame_bgr, [box])[0]

    def predict_frame(self, frame: np.ndarray) -> list[FacePrediction]:
        """Detect every face in ``frame`` and classify them all."""
        gray = to_gray(frame)  # once: both steps below accept gray frames as they are
        boxes = detect_faces(gray)
        results = self.predict_faces(gray, boxes)
        return [FacePrediction(b, e, i, p) for b, (e, i, p) in zip(boxes, results, strict=True)]
