"""How the web service runs: its configuration, readable without torch or OpenCV (``ferkit serve
--help`` shows its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ferkit.defaults import DEFAULT_DETECTOR


@dataclass(frozen=True)
class ServiceConfig:
    """How one service process runs.

    ``pipelines``: requests analysed side by side in this process, each pipeline with its own
    detector and ONNX Runtime session of ``threads`` threads. ``max_side``: larger images are shrunk
    to this longer side for detection (faces are still cropped from the full image); 0 detects at
    full size, as every other entry point does, so that a photo gets the same answer here as from
    ``ferkit image`` or the Python API (YuNet itself shrinks frames to at most 960 pixels).
    ``min_confidence``: faces less sure than this are labelled ``uncertain`` (0: never).
    """

    model: str | None = None
    device: str = "auto"
    backend: str = "auto"
    min_confidence: float = 0.0
    detector: str = DEFAULT_DETECTOR
    max_side: int = 0
    max_upload_bytes: int = 10 * 2**20
    max_batch: int = 16
    max_pixels: int = 40_000_000
    pipelines: int = 1
    threads: int = 1
