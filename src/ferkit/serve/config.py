"""How the web service runs: its configuration, readable without torch or OpenCV (``ferkit serve
--help`` shows its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ferkit.defaults import ALIGN, DEFAULT_DETECTOR, DEFAULT_TTA, MIN_CONFIDENCE

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def host_name(header: str) -> str:
    """The host name of a ``Host`` header, without port or IPv6 brackets, lower-cased."""
    name = header.strip().lower()
    if name.startswith("["):
        return name[1 : name.find("]")] if "]" in name else name
    return name.rsplit(":", 1)[0] if name.count(":") == 1 else name


def host_refusal(header: str, allowed: tuple[str, ...]) -> str | None:
    """Why a request addressed to ``header`` (its ``Host``) is refused, or None if ``allowed`` names it."""
    if "*" in allowed or host_name(header) in allowed:
        return None
    return f"host {header!r} is not allowed (ferkit serve --allowed-hosts {' '.join(allowed)} NAME to add one)"


@dataclass(frozen=True)
class ServiceConfig:
    """How one service process runs.

    ``pipelines``: requests analysed side by side in this process, each pipeline with its own
    detector and ONNX Runtime session of ``threads`` threads. ``max_side``: larger images are shrunk
    to this longer side for detection (faces are still cropped from the full image); 0 detects at
    full size, as every other entry point does, so that a photo gets the same answer here as from
    ``ferkit image`` or the Python API (YuNet itself shrinks frames to at most 960 pixels).
    ``min_confidence``: faces less sure than this are labelled ``uncertain`` (0: never). ``tta``: test-time
    views of each face, ``align``: whether faces are aligned by their landmarks (``EmotionPredictor``'s).
    ``allowed_hosts``: the names a request's ``Host`` header may give (``*``: any); by default
    loopback only, so that a web page on another site cannot reach this service through a DNS
    name that resolves to 127.0.0.1 (DNS rebinding). ``cors_origins``: web origins (``https://app.example``)
    whose pages may call the API from a browser; none by default (the service's own page needs none).
    ``max_live_sessions``: live WebSocket streams open at once (each holds its own face tracks).
    """

    model: str | None = None
    device: str = "auto"
    backend: str = "auto"
    min_confidence: float = MIN_CONFIDENCE
    tta: str = DEFAULT_TTA
    detector: str = DEFAULT_DETECTOR
    align: bool = ALIGN
    max_side: int = 0
    max_upload_bytes: int = 10 * 2**20
    max_batch: int = 16
    max_pixels: int = 40_000_000
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    cors_origins: tuple[str, ...] = ()
    max_live_sessions: int = 8
    max_requests_per_worker: int = 2000  # then a worker process is replaced (bounds leaked native memory)
    pipelines: int = 1
    threads: int = 1
