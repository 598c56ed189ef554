"""The service's live mode: one WebSocket per client, each with its own :class:`FacePipeline`, so
that faces keep their ids from frame to frame and their probabilities are smoothed exactly as in
``ferkit webcam`` (the same pipeline, with the same defaults).

    client -> service: binary messages, one frame each (JPEG, PNG...); the next once the answer is in
    service -> client: one JSON text message per frame, {"frame", "width", "height", "faces",
                       "timing_ms", "model"}, or {"error": "what is wrong", "status": 4xx or 503}
                       for a frame it could not use (the session goes on)

With worker processes, a session's face detection runs in them (they are recycled, bounding any
native memory that grows; since 0.5 YuNet itself keeps none, ``benchmarks/long_run.py``); following faces
between detections, classifying and smoothing run in the service's process, in a thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import numpy as np

from ferkit.infer.detection import Detection, FaceDetector, create_detector
from ferkit.infer.pipeline import FacePipeline
from ferkit.infer.predictor import EmotionPredictor
from ferkit.serve.config import ServiceConfig, host_refusal
from ferkit.serve.workers import RequestError, WorkerProcesses, decode_image, detect_in_worker, make_predictor


class RemoteDetector(FaceDetector):
    """A detector whose work runs in the service's worker processes (the same kind and settings as
    ``local``, the detector it stands for)."""

    def __init__(self, workers: WorkerProcesses, local: FaceDetector) -> None:
        super().__init__(local.min_size)
        self.workers, self.name, self.margin = workers, local.name, local.margin

    def detect(self, frame: np.ndarray, scale: float = 1.0) -> list[Detection]:
        return self.workers.call(detect_in_worker, frame, scale)


class LiveSession:
    """One client's stream: its pipeline and frame count."""

    def __init__(self, pipeline: FacePipeline, config: ServiceConfig, model_name: str) -> None:
        self.pipeline, self.config, self.model_name, self.frames = pipeline, config, model_name, 0

    def process(self, data: bytes) -> dict:
        """The answer to one frame (runs in a thread; raises :class:`RequestError` for a bad frame)."""
        start = time.perf_counter()
        if len(data) > self.config.max_upload_bytes:
            raise RequestError(413, f"frame of {len(data)} bytes is over the upload limit of "
                                    f"{self.config.max_upload_bytes} bytes")
        image = decode_image(data, f"frame {self.frames}", self.config.max_pixels)
        faces = self.pipeline.process(image)
        self.frames += 1
        return {"frame": self.frames - 1, "width": image.shape[1], "height": image.shape[0],
                "faces": [f.to_dict() for f in faces], "model": self.model_name,
                "timing_ms": {"total": round(1000 * (time.perf_counter() - start), 2)}}


class LiveSessions:
    """The open live sessions, at most ``config.max_live_sessions``; the classifier is loaded once
    (on the first session) and shared, each session has its own detector and tracks."""

    def __init__(self, config: ServiceConfig, workers: WorkerProcesses | None, model_name: str,
                 predictor: EmotionPredictor | None = None) -> None:
        self.config, self.workers, self.model_name = config, workers, model_name
        self.open: dict[int, LiveSession] = {}
        self._predictor, self._ids, self._lock = predictor, itertools.count(), threading.Lock()

    def start(self) -> tuple[int, LiveSession] | None:
        """A new session and its id, or None when ``max_live_sessions`` are open."""
        with self._lock:
            if len(self.open) >= self.config.max_live_sessions:
                return None
            if self._predictor is None:
                self._predictor = make_predictor(self.config)
            local = create_detector(self.config.detector)
            detector = local if self.workers is None else RemoteDetector(self.workers, local)
            session_id = next(self._ids)
            self.open[session_id] = LiveSession(FacePipeline(self._predictor, detector), self.config, self.model_name)
            return session_id, self.open[session_id]

    def end(self, session_id: int) -> None:
        """Forget a session (its client went away): its pipeline and tracks are freed."""
        with self._lock:
            self.open.pop(session_id, None)


def websocket_refusal(headers: Mapping[str, str], config: ServiceConfig) -> str | None:
    """Why a WebSocket handshake is refused, or None: its ``Host`` must be allowed (as for every
    request), and a browser's ``Origin`` must be this service itself or one of ``config.cors_origins``
    (browsers let any page open a WebSocket anywhere; the Origin is what tells them apart)."""
    host = headers.get("host", "")
    if refusal := host_refusal(host, config.allowed_hosts):
        return refusal
    origin = headers.get("origin")
    if origin is None or origin in config.cors_origins:
        return None
    if urlsplit(origin).netloc.lower() != host.strip().lower():
        return f"origin {origin!r} may not open a live session (ferkit serve --cors-origin to allow it)"
    return None
