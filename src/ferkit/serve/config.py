"""How the web service runs: its configuration, readable without torch or OpenCV (``ferkit serve
--help`` shows its defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceConfig:
    """How one service process runs.

    ``pipelines``: requests analysed side by side in this process, each pipeline with its own
    detector and ONNX Runtime session of ``threads`` threads. ``max_side``: larger images are shrunk
    to this longer side for detection (faces are still cropped from the full image). The default
    detector is YuNet: faster than Haar at the same size (8 clients of ``benchmarks/serve_load.py``:
    p99 84 ms against 239 ms) and it finds more faces (``benchmarks/detector_recall.py``).
    """

    model: str | None = None
    device: str = "auto"
    backend: str = "auto"
    detector: str = "yunet"
    max_side: int = 320
    max_upload_bytes: int = 10 * 2**20
    max_batch: int = 16
    max_pixels: int = 40_000_000
    pipelines: int = 1
    threads: int = 1
