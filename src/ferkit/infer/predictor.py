"""Emotion recognition on images: find faces, crop them the FER2013 way, classify them in batches.

    from ferkit import EmotionPredictor
    predictor = EmotionPredictor()                       # the bundled model
    for face in predictor.predict("photo.jpg"):          # a path, a PIL image, a BGR array, or a list of them
        print(face.box, face.emotion, face.confidence, face.probabilities)   # face.to_dict() for JSON
    emotion, index, probs = predictor.predict_emotion_from_frame(frame_bgr, (x, y, w, h))

On the CPU, with ONNX Runtime installed (``pip install 'ferkit[onnx]'``), the network runs there:
the bundled model as its int8 export, any other checkpoint as an fp32 export made once and cached.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import cv2
import numpy as np
import torch

from ferkit.data import IMAGE_SIZE
from ferkit.defaults import ALIGN, DEFAULT_TTA, MIN_CONFIDENCE, TTA_MODES, UNCERTAIN, UNSUPPORTED_IMAGE_SUFFIXES
from ferkit.device import resolve_device
from ferkit.infer.align import alignment, warp_face
from ferkit.infer.backends import BACKENDS, TorchClassifier, load_classifier
from ferkit.infer.detection import (
    DEFAULT_DETECTOR,
    DETECTOR_CLASSES,
    Box,
    FaceDetector,
    HaarDetector,
    detect_faces,
    get_detector,
    to_gray,
)
from ferkit.infer.models import resolve_model
from ferkit.views import average_views, tta_views

if TYPE_CHECKING:
    from ferkit.infer.explain import Explanation

__all__ = ["BACKENDS", "Box", "EmotionPredictor", "Face", "ImageError", "crop_face", "crop_square",
           "decode_image", "detect_faces", "load_image", "resize_face", "to_gray"]

@dataclass(frozen=True)
class Face:
    """One face of an image: where it is, what it shows, and (in a video) who it is over time.

    ``scores`` holds the class probabilities in ``class_names`` order; ``probabilities`` is the same
    as a dict. ``detection_score`` and ``landmarks`` (eyes, nose tip, mouth corners) come from the
    detector where it gives them (YuNet, not Haar; between detections, a face's last ones moved with its box).
    """

    box: Box
    emotion: str
    index: int
    scores: np.ndarray
    class_names: tuple[str, ...]
    track_id: int | None = None  # stable across the frames of a video (FacePipeline); face index for stills
    detection_score: float | None = None
    landmarks: tuple[tuple[int, int], ...] | None = None

    @property
    def confidence(self) -> float:
        """The probability of the most probable emotion (``index``; also when ``emotion`` is ``"uncertain"``)."""
        return float(self.scores[self.index])

    @property
    def probabilities(self) -> dict[str, float]:
        """Each class's probability, by name."""
        return {n: float(p) for n, p in zip(self.class_names, self.scores, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: what ``ferkit predict`` writes per face and ``/v1/predict`` returns."""
        x, y, w, h = (int(v) for v in self.box)
        return {"box": {"x": x, "y": y, "w": w, "h": h}, "emotion": self.emotion,
                "confidence": round(self.confidence, 6),
                "probabilities": {n: round(p, 6) for n, p in self.probabilities.items()},
                "detection_score": None if self.detection_score is None else round(float(self.detection_score), 4),
                "landmarks": None if self.landmarks is None else [[int(a), int(b)] for a, b in self.landmarks],
                "track_id": self.track_id}


# The largest image file read (width x height), checked from its header before decoding: 200 million pixels
# (14142 x 14142) take 600 MB as BGR; a 1 MB PNG can claim 10 billion.
MAX_IMAGE_PIXELS = 200_000_000
ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821 (PIL is optional)
COLORS = ("bgr", "rgb")


class ImageError(ValueError):
    """Bytes that are not an image ferkit scores: ``reason`` is ``empty``, ``too_large`` (more than
    ``max_pixels``) or ``unreadable`` (not an image, or a truncated one)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_image(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A BGR image from an image file's bytes: the one decoding policy of every entry point (files,
    folders, uploads, live frames). The header's pixel count is checked before any pixel is decoded
    (a small file cannot claim a billion pixels), a truncated JPEG or PNG is refused rather than
    scored half grey, and anything OpenCV cannot decode is refused; each as an :class:`ImageError`
    naming ``name``."""
    if not data:
        raise ImageError(f"{name}: empty (no bytes)", "empty")
    pixels = _header_pixels(data)
    if pixels is not None and pixels > max_pixels:
        raise ImageError(f"{name}: {pixels:,} pixels, over the limit of {max_pixels:,} "
                         "(ferkit.infer.predictor.MAX_IMAGE_PIXELS); nothing was decoded", "too_large")
    if _truncated(data):
        raise ImageError(f"{name}: not a readable image (truncated: the file ends before the image does)",
                         "unreadable")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # 8-bit BGR
    except cv2.error as e:  # formats whose header Pillow reads but OpenCV's decoders reject loudly
        raise ImageError(f"{name}: not a readable image ({str(e).strip().splitlines()[-1][:150]})",
                         "unreadable") from None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable image (JPEG, PNG, BMP, WebP or TIFF)", "unreadable")
    return image


def _truncated(data: bytes) -> bool:
    """Whether a JPEG ends before its last scan does (no end-of-image marker after the last
    start-of-scan: entropy-coded data never holds either unescaped), or a PNG lacks its IEND chunk."""
    if data[:2] == b"\xff\xd8":
        return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data.rfind(b"IEND") < 0
    return False


def load_image(image: ImageInput, color: str = "bgr") -> np.ndarray:
    """An image as a numpy array in OpenCV's layout (BGR, BGRA or gray): from a path (decoded by
    :func:`decode_image`), a PIL image, or an array whose channels are in ``color`` order (``bgr``, as
    OpenCV reads; ``rgb``, as PIL, matplotlib and most other libraries give them)."""
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if path.suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES:
            raise ValueError(f"{path}: {path.suffix.lower()[1:].upper()} images are not supported; convert it to "
                             "PNG or JPEG")
        return decode_image(path.read_bytes(), str(path))
    if type(image).__module__.startswith("PIL."):
        rgb = np.asarray(image.convert("L" if image.mode in ("L", "I;16", "I", "F") else "RGB"))
        return rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"an image must be a path, a PIL image or a numpy array, got {type(image).__name__}")
    if color == "rgb" and image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[..., [2, 1, 0, *([3] if image.shape[2] == 4 else [])]])
    return image


def _header_pixels(data: bytes) -> int | None:
    """An image file's pixel count from its header, before any pixel is decoded (None where Pillow,
    which matplotlib brings along, cannot read the header: OpenCV then has its say)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as header:
            return header.size[0] * header.size[1]
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit: its message holds the count
        found = re.search(r"\((\d+) pixels\)", str(e))
        return int(found.group(1)) if found else MAX_IMAGE_PIXELS + 1
    except Exception:
        return None


def crop_face(gray: np.ndarray, box: Box, margin: float = HaarDetector.margin) -> np.ndarray:
    """A square 48x48 crop centred on ``box``, its side the box's longer side widened by ``margin``
    of it on each side (narrowed if negative; ``benchmarks/crop_margin.py`` measures the margin that
    frames each detector's boxes like FER2013); parts beyond the frame's edge repeat the edge pixels."""
    height, width = gray.shape[:2]
    x0, y0, side, _ = crop_square(box, margin, (height, width))
    x1, y1 = x0 + side, y0 + side
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return resize_face(gray[y0:y1, x0:x1])


def crop_square(box: Box, margin: float, shape: tuple[int, ...]) -> Box:
    """The square :func:`crop_face` cuts for ``box`` in a frame of ``shape`` (height, width, ...),
    as (x, y, side, side) in frame pixels; it may reach past the frame's edge."""
    if not -0.5 < margin:
        raise ValueError(f"margin must be above -0.5, got {margin}")
    x, y, w, h = (int(v) for v in box)
    height, width = shape[:2]
    if w <= 0 or h <= 0:
        raise ValueError(f"box {box} has zero or negative size")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"box {box} lies outside the {width}x{height} frame")
    side = max(w, h) * (1 + 2 * margin)
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    side = max(1, int(round(side)))
    return x0, y0, side, side


def box_matrix(box: Box, margin: float, shape: tuple[int, ...]) -> np.ndarray:
    """The frame-to-48x48 matrix (2x3) of the square :func:`crop_face` cuts for ``box``."""
    x0, y0, side, _ = crop_square(box, margin, shape)
    scale = IMAGE_SIZE / side
    return np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])


def resize_face(face: np.ndarray) -> np.ndarray:
    """A grayscale face of any size as 48x48 uint8."""
    face = to_gray(face)
    if face.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return face
    shrinking = face.shape[0] > IMAGE_SIZE or face.shape[1] > IMAGE_SIZE
    return cv2.resize(face, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class EmotionPredictor:
    """A trained model ready for faces: loads a checkpoint safely (weights only) once.

    ``model``: a bundled model's name (``"fast"``, the default; ``"fast7"`` for FER2013's seven
    classes) or a ferkit checkpoint, weights file
    or ONNX export (``checkpoint=`` is the same, by its older name).
    ``device``: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    ``backend``: ``"auto"`` (ONNX Runtime on the CPU when installed), ``"torch"`` or ``"onnx"``.
    ``margin``: the crop margin for boxes passed in (default: the one that suits the default
    detector's boxes, so that ``predict_emotion_from_frame(image, face.box, face.landmarks)`` gives
    ``face``'s own probabilities, and so does ``(image, face.box)`` with ``align=False``;
    ``HaarDetector.margin`` for boxes from a Haar cascade).
    ``threads``: ONNX Runtime's threads (default: one per core).
    ``min_confidence``: faces whose top probability is below it are labelled ``"uncertain"`` (their
    probabilities and ``index``, the most probable class, unchanged); 0 (the default) never abstains.
    ``tta``: test-time views of each face, their probabilities averaged (``TTA_MODES``, as in
    evaluation): ``"flip"`` (the default: the face and its mirror, in one batch; on PublicTest, +1.1
    points of FER2013 accuracy for the ``fast`` model), ``"none"`` (one view) or more: ``"tencrop_full"``
    (12 views) adds 0.1-1.4 points more for about 1.15x a photo's time (``docs/inference.md``).
    ``docs/MODEL_CARD.md`` gives each bundled model's accuracy at several thresholds.
    ``align``: faces whose detector gives landmarks (YuNet's) are rotated upright and framed by their
    eyes and mouth the way FER2013's are (:mod:`ferkit.infer.align`; ``defaults.ALIGN`` says what it
    gained); False crops every face by its box alone. Boxes passed without landmarks are box crops.

    Probabilities are calibrated: the logits are divided by the model's fitted temperature
    (:mod:`ferkit.calibration`) before the softmax.
    """

    def __init__(
        self, model: str | os.PathLike | None = None, device: str = "auto", margin: float | None = None,
        backend: str = "auto", threads: int | None = None, *, checkpoint: str | os.PathLike | None = None,
        min_confidence: float = MIN_CONFIDENCE, tta: str = DEFAULT_TTA, align: bool = ALIGN,
    ) -> None:
        if not 0 <= min_confidence <= 1:
            raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence}")
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
        self.tta, self.align = tta, bool(align)
        self.min_confidence = float(min_confidence)
        self.checkpoint_path = resolve_model(checkpoint if model is None else model)
        self.device = resolve_device(device)
        self.classifier = load_classifier(self.checkpoint_path, backend, self.device, threads)
        self.backend: str = self.classifier.name
        self.class_names: tuple[str, ...] = self.classifier.class_names
        self.margin = DETECTOR_CLASSES[DEFAULT_DETECTOR].margin if margin is None else margin
        self._explainer: torch.nn.Module | None = None  # PyTorch weights for Grad-CAM, loaded when first asked

    def predict_crops(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) for faces already cropped the FER2013 way (grayscale or
        BGR arrays of any size; resized to 48x48), run through the network as one batch."""
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return self._probabilities(np.stack([resize_face(f) for f in faces])[:, None].astype(np.float32) / 255)

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities of a float batch (N, 1, 48, 48) in [0, 1], averaged over
        its test-time views (all through the network as one batch)."""
        views = torch.cat(tta_views(torch.from_numpy(batch), self.tta)).numpy()
        logits = self.classifier.logits(views).astype(np.float32).reshape(-1, len(batch), len(self.class_names))
        return average_views(logits, self.classifier.temperature)

    def crop(self, gray: np.ndarray, box: Box, landmarks=None, margin: float | None = None) -> np.ndarray:
        """The 48x48 face the network sees for ``box`` in a grayscale frame: aligned by its landmarks
        where this predictor aligns and they are given, else cropped by the box with ``margin``."""
        matrix = alignment(landmarks) if self.align else None
        if matrix is None:
            return crop_face(gray, box, self.margin if margin is None else margin)
        return warp_face(gray, matrix)

    def face_matrix(self, shape: tuple[int, ...], box: Box, landmarks=None, margin: float | None = None) -> np.ndarray:
        """The frame-to-48x48 matrix (2x3) of :meth:`crop` for a frame of ``shape``."""
        matrix = alignment(landmarks) if self.align else None
        return box_matrix(box, self.margin if margin is None else margin, shape) if matrix is None else matrix

    def predict_faces(
        self, frame: np.ndarray, boxes: Sequence[Box], margin: float | None = None,
        landmarks: Sequence | None = None,
    ) -> list[tuple[str, int, np.ndarray]]:
        """``(emotion, index, probabilities)`` for each box of one frame, in one batch; ``landmarks``
        (one entry per box, or None) lets :meth:`crop` align them."""
        gray = to_gray(frame)
        points = [None] * len(boxes) if landmarks is None else landmarks
        probs = self.predict_crops([self.crop(gray, b, p, margin) for b, p in zip(boxes, points, strict=True)])
        return [(self.label(p), int(p.argmax()), p) for p in probs]

    def label(self, probabilities: np.ndarray) -> str:
        """The emotion of a face's class probabilities, or ``"uncertain"`` below ``min_confidence``."""
        top = int(probabilities.argmax())
        return UNCERTAIN if probabilities[top] < self.min_confidence else self.class_names[top]

    def predict_emotion_from_frame(self, frame_bgr: np.ndarray, box: Box,
                                   landmarks=None) -> tuple[str, int, np.ndarray]:
        """Emotion name, class index and class probabilities of the face at ``box = (x, y, w, h)``
        (a box crop; aligned, as :meth:`predict` does, when its five ``landmarks`` are given too)."""
        return self.predict_faces(frame_bgr, [box], None, [landmarks])[0]

    def predict_frame(
        self, frame: np.ndarray, detector: FaceDetector | str = DEFAULT_DETECTOR, detect_scale: float = 1.0
    ) -> list[Face]:
        """Detect every face in ``frame`` (with the named detector, or one made by
        :func:`ferkit.infer.detection.create_detector`; on a copy shrunk by ``detect_scale``) and classify
        them all, cropped from the full frame with the detector's margin. Faces come largest first,
        their ``track_id`` the index in that order."""
        detector = get_detector(detector) if isinstance(detector, str) else detector
        found = detector.detect(frame, detect_scale)
        results = self.predict_faces(frame, [d.box for d in found], detector.margin, [d.landmarks for d in found])
        return [Face(d.box, e, i, p, self.class_names, n, d.score, d.landmarks)
                for n, (d, (e, i, p)) in enumerate(zip(found, results, strict=True))]

    def explain(self, image: ImageInput, method: str = "auto", color: str = "bgr",
                detector: FaceDetector | str = DEFAULT_DETECTOR) -> list[Explanation]:
        """Each face of ``image`` with a heat map of what drove its predicted class
        (:mod:`ferkit.infer.explain`): ``gradcam`` (PyTorch weights needed: loaded on the CPU if this
        predictor runs an ONNX model made from a checkpoint), ``occlusion`` (any backend), or ``auto``
        (Grad-CAM where the weights are at hand, else occlusion)."""
        from ferkit.infer.explain import METHODS, Explanation, gradcam, occlusion

        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        frame = load_image(image, color)
        detector = get_detector(detector) if isinstance(detector, str) else detector
        faces = self.predict_frame(frame, detector)
        if not faces:
            return []
        gray = to_gray(frame)
        batch = np.stack([self.crop(gray, f.box, f.landmarks, detector.margin) for f in faces])[:, None]
        batch = batch.astype(np.float32) / 255
        classes = np.array([f.index for f in faces])
        model = self._torch_model() if method != "occlusion" else None
        if method == "gradcam" and model is None:
            raise ValueError(f"{self.checkpoint_path}: Grad-CAM needs PyTorch weights, not an ONNX file; "
                             "use method='occlusion'")
        if model is not None:
            maps, method = gradcam(model, batch, classes), "gradcam"
        else:
            maps, method = occlusion(self._probabilities, batch, classes), "occlusion"
        return [Explanation(f, m, self.face_matrix(frame.shape, f.box, f.landmarks, detector.margin), method)
                for f, m in zip(faces, maps, strict=True)]

    def _torch_model(self) -> torch.nn.Module | None:
        """The network in PyTorch (this predictor's, or loaded on the CPU once); None for an ONNX file."""
        if isinstance(self.classifier, TorchClassifier):
            return self.classifier.model
        if self.checkpoint_path.suffix == ".onnx":
            return None
        if self._explainer is None:
            self._explainer = load_classifier(self.checkpoint_path, "torch", torch.device("cpu")).model
        return self._explainer

    def predict(self, images: ImageInput | Sequence[ImageInput], color: str = "bgr",
                detector: FaceDetector | str = DEFAULT_DETECTOR) -> list[Face] | list[list[Face]]:
        """The faces of one image (a path, a ``pathlib.Path``, a PIL image or a numpy array whose
        channels are in ``color`` order), or of each image of a list: a list of :class:`Face`, largest
        first, or one such list per image."""
        if isinstance(images, (list, tuple)):
            return [self.predict(image, color, detector) for image in images]
        return self.predict_frame(load_image(images, color), detector)
