"""Face detection, offline: YuNet (the default), the libfacedetection CNN whose weights ship inside
the ``yuface`` wheel, or OpenCV's Haar cascade.

    from ferkit.infer.detection import create_detector
    detector = create_detector("yunet")          # or "haar"
    boxes = detector(frame_bgr)                  # [(x, y, w, h), ...], largest first

Each detector carries the crop ``margin`` that frames its boxes the way FER2013 frames faces
(measured by ``benchmarks/crop_margin.py``: the margin that scores best on PublicTest).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ferkit.defaults import DEFAULT_DETECTOR, DETECTORS

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class Detection:
    """One face a detector found: its box, its score (0-1; None where the detector gives none) and
    its five landmarks (eyes, nose tip, mouth corners; None where the detector gives none)."""

    box: Box
    score: float | None = None
    landmarks: tuple[tuple[int, int], ...] | None = None


def to_gray(frame: np.ndarray) -> np.ndarray:
    """Any common frame layout as 8-bit grayscale: BGR, BGRA, gray (2-D or one channel), uint8,
    uint16 or float in [0, 1]."""
    frame = _to_uint8(frame)
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Any common frame layout (see :func:`to_gray`) as 8-bit BGR."""
    frame = _to_uint8(frame)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return frame if frame.shape[2] == 3 else cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    """uint8, and 2-D or 3 or 4 channels; anything else is a TypeError or ValueError saying why."""
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
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4)):
        return frame
    raise ValueError(f"frame shape {frame.shape} is not an image (H x W, H x W x 1, 3 or 4)")


def shrink(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized by ``factor`` (at most 1) with area averaging; at least one pixel a side."""
    if factor >= 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


class FaceDetector:
    """Base of the detectors: ``detector(frame, scale=1.0)`` returns boxes, largest first, and
    ``detector.detect(frame, scale)`` the same faces as :class:`Detection` (with scores and landmarks).

    ``scale`` < 1 detects on a frame shrunk by that factor (faster; boxes come back in the
    original frame's pixels); faces smaller than ``min_size / scale`` pixels may then be missed.
    """

    name = "base"
    margin = 0.0  # crop margin (fraction of the box on each side) that frames its boxes like FER2013

    def __init__(self, min_size: int = 30) -> None:
        self.min_size = min_size

    def __call__(self, frame: np.ndarray, scale: float = 1.0) -> list[Box]:
        return [d.box for d in self.detect(frame, scale)]

    def detect(self, frame: np.ndarray, scale: float = 1.0) -> list[Detection]:
        """Every face in ``frame``, largest first, in the frame's pixels."""
        if not 0 < scale <= 1:
            raise ValueError(f"detection scale must be in (0, 1], got {scale}")
        found = self._detect(shrink(frame, scale), max(1, round(self.min_size * scale)))
        if scale < 1:
            found = [_scaled(d, 1 / scale) for d in found]
        return sorted(found, key=lambda d: -d.box[2] * d.box[3])

    def _detect(self, frame: np.ndarray, min_size: int) -> list[Detection]:
        raise NotImplementedError


def _scaled(d: Detection, factor: float) -> Detection:
    """A detection made on a resized frame, in the original frame's pixels."""
    box = tuple(int(round(v * factor)) for v in d.box)
    points = None if d.landmarks is None else tuple((int(round(x * factor)), int(round(y * factor)))
                                                     for x, y in d.landmarks)
    return Detection(box, d.score, points)


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (``haarcascade_frontalface_default.xml``)."""

    name = "haar"
    margin = 0.0  # benchmarks/crop_margin.py: best on PublicTest (70.9% vs 70.4% at -0.05 and 66.1% at 0.1)

    def __init__(self, min_size: int = 30, scale_factor: float = 1.1, min_neighbors: int = 5) -> None:
        super().__init__(min_size)
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)  # its own: detectors in different threads share nothing
        if self._cascade.empty():
            raise RuntimeError(f"could not load OpenCV's Haar cascade from {path}")

    def _detect(self, frame: np.ndarray, min_size: int) -> list[Detection]:
        found = self._cascade.detectMultiScale(
            to_gray(frame), scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
        )
        return [Detection(tuple(int(v) for v in b)) for b in found]


class LibFaceDetection:
    """YuNet's C entry point, ``facedetect_cnn``, in the ``yuface`` wheel's own libfacedetection,
    called with a result buffer that this object owns and reuses.

    The wheel's Python binding (``yuface.c_detect``) allocates a 36 KiB result buffer on every call
    and never frees it: +36.0 KiB of resident memory a call, 3.9 GB an hour of video at 30
    detections a second (``benchmarks/long_run.py detector --binding wheel``). Called this way, the
    same network on the same pixels gives the same faces (``tests/infer/test_detection.py``), as fast,
    and memory stays flat; the call also lets go of Python's lock while the network runs. Calls on
    one object are serialized.
    """

    LIBRARY = "libfacedetection.so.v0.0.3"  # the build whose result layout is read below (yuface 2023.5.1)
    SYMBOL = "_Z14facedetect_cnnPhS_iii"  # int* facedetect_cnn(uchar* result, uchar* bgr, int w, int h, int step)
    RESULT_BYTES = 0x20000  # the result buffer's size the library asks for
    ROW = 16  # shorts per face: score (0-100), box (x, y, w, h), five landmarks (x, y), one unused

    def __init__(self) -> None:
        self._entry = _facedetect_cnn()
        self._result = np.zeros(self.RESULT_BYTES, np.uint8)
        self._lock = threading.Lock()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The faces of a contiguous uint8 BGR frame: (N, 16) int16 rows, as ``yuface.c_detect`` gives them."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"YuNet needs a (height, width, 3) BGR frame, got shape {frame.shape}")
        height, width = frame.shape[:2]
        with self._lock:
            self._entry(self._result.ctypes.data, frame.ctypes.data, width, height, width * 3)
            count = int(self._result[:4].view(np.int32)[0])
            return self._result[4 : 4 + 2 * self.ROW * count].view(np.int16).reshape(count, self.ROW).copy()


_load_lock = threading.Lock()


@lru_cache(maxsize=1)
def _facedetect_cnn():
    """libfacedetection's entry point, loaded once and warmed up (its first call sets up the network's
    filters, which two threads must not do at once); None where the wheel holds another build."""
    import ctypes

    import yuface

    library = Path(yuface.__file__).parent / LibFaceDetection.LIBRARY
    if not library.is_file():
        return None
    try:
        entry = getattr(ctypes.CDLL(str(library)), LibFaceDetection.SYMBOL)
    except (OSError, AttributeError):
        return None
    entry.restype = ctypes.c_void_p
    entry.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    with _load_lock:
        result, frame = np.zeros(LibFaceDetection.RESULT_BYTES, np.uint8), np.zeros((32, 32, 3), np.uint8)
        entry(result.ctypes.data, frame.ctypes.data, 32, 32, 96)
    return entry


class YuNetDetector(FaceDetector):
    """YuNet (libfacedetection) through the ``yuface`` wheel: more accurate than Haar, also offline.

    ``confidence``: the score (0-1) a detection needs; ``min_size``: the smallest face side reported,
    in YuNet's boxes (tighter than most hand-drawn ones: a 37-pixel dlib label is about a 30-pixel YuNet
    box). Frames are shrunk first, as far as ``min_size`` allows: until such a face is ``smallest``
    pixels, a size the network still finds reliably, which makes a 640x480 still about half as costly
    to detect (``benchmarks/detector_recall.py`` finds all 43 labelled faces either way); and to at
    most ``max_side`` pixels, the frames the network was trained on.
    """

    name = "yunet"
    margin = -0.05  # benchmarks/crop_margin.py: best on PublicTest (70.7% vs 69.4% at 0 and 62.6% at 0.1)
    smallest = 18  # a face side (pixels) YuNet finds reliably: 43/43 labelled faces at 24 -> 18, 41-42 at 28 -> 14-16

    def __init__(self, min_size: int = 24, confidence: float = 0.7, max_side: int = 960) -> None:
        super().__init__(min_size)
        try:
            import yuface
        except ImportError:
            raise ImportError("the yunet detector needs the yuface wheel: pip install yuface") from None
        # int16 boxes: faces crossing the edge keep negative coordinates. The wheel's own binding leaks 36 KiB a
        # call (LibFaceDetection); it is only used where the wheel holds another build of the library.
        self._detect_raw = LibFaceDetection() if _facedetect_cnn() is not None else yuface.c_detect
        self.confidence, self.max_side = confidence, max_side

    def _detect(self, frame: np.ndarray, min_size: int) -> list[Detection]:
        frame = to_bgr(frame)
        factor = min(1.0, self.max_side / max(frame.shape[:2]), self.smallest / min_size)
        rows = self._detect_raw(np.ascontiguousarray(shrink(frame, factor)))
        found = []
        for row in rows:  # score (0-100), x, y, w, h, five landmarks (x, y)
            values = [int(v) for v in row]
            d = _scaled(Detection(tuple(values[1:5]), values[0] / 100, tuple(zip(values[5:15:2], values[6:15:2],
                                                                                   strict=True))), 1 / factor)
            if d.score >= self.confidence and min(d.box[2], d.box[3]) >= min_size:
                found.append(d)
        return found


DETECTOR_CLASSES: dict[str, type[FaceDetector]] = {"haar": HaarDetector, "yunet": YuNetDetector}


def create_detector(name: str = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """A detector by name: ``yunet`` (default) or ``haar``; ``options`` go to its constructor."""
    if name not in DETECTOR_CLASSES:
        raise ValueError(f"unknown detector {name!r}; expected one of {DETECTORS}")
    return DETECTOR_CLASSES[name](**options)


def detect_faces(frame: np.ndarray, min_size: int | None = None, detector: str = DEFAULT_DETECTOR) -> list[Box]:
    """Every face the named detector finds in ``frame``, as ``(x, y, w, h)``, largest first.
    ``min_size``: the smallest face side in pixels (default: the detector's, 30 for Haar, 24 for YuNet)."""
    return get_detector(detector, min_size)(frame)


@lru_cache(maxsize=8)
def get_detector(name: str = DEFAULT_DETECTOR, min_size: int | None = None) -> FaceDetector:
    """A detector with default settings, made once per name and size and shared by its callers (for
    detectors that threads run side by side, make one each with :func:`create_detector`)."""
    return create_detector(name) if min_size is None else create_detector(name, min_size=min_size)
