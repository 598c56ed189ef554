"""Reading images and videos, finding images in folders, drawing results, measuring frame rates."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ferkit.defaults import IMAGE_SUFFIXES, UNSUPPORTED_IMAGE_SUFFIXES
from ferkit.infer.predictor import Face, load_image

COLORS = {"angry": (40, 40, 230), "disgust": (40, 140, 40), "fear": (160, 60, 160), "sad": (200, 120, 40),
          "happy": (40, 200, 240), "surprise": (230, 160, 40), "neutral": (200, 200, 200)}
EXAMPLES_DIR = Path(__file__).parents[1] / "examples"


def example_images() -> list[Path]:
    """The photos bundled with ferkit (public-domain portraits; see ``examples/README.md``)."""
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def find_images(paths: Sequence[str | Path]) -> Iterator[tuple[Path, Path]]:
    """``(path, name)`` for every path given and every image under the folders given (recursively,
    sorted); ``name`` is the path relative to the folder it was found in. Paths that do not exist
    are passed on, for the reader to report."""
    for given in map(Path, paths):
        if given.is_dir():
            wanted = IMAGE_SUFFIXES + UNSUPPORTED_IMAGE_SUFFIXES  # the latter to report them, not skip them silently
            for path in sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in wanted):
                yield path, path.relative_to(given)
        else:
            yield given, Path(given.name)


def refuse_overwriting(inputs: Sequence[str | Path], outputs: Sequence[str | Path | None]) -> None:
    """A ``ValueError`` naming the first output that is one of the inputs (or the same file by another
    path), raised before any work: ferkit never writes over what it reads."""
    given = {Path(p).resolve() for p in inputs}
    for out in outputs:
        if out is not None and Path(out).resolve() in given:
            raise ValueError(f"{out}: the output would overwrite an input; choose another path")


def distinct(paths: Sequence[Path]) -> list[Path]:
    """``paths`` with later repeats renamed ``name-2.jpg``, ``name-3.jpg``...: images of the same name
    from different folders keep an output each."""
    seen: set[Path] = set()
    out = []
    for path in paths:
        candidate, n = path, 1
        while candidate in seen:
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        seen.add(candidate)
        out.append(candidate)
    return out


def read_images(paths: Sequence[str | Path], skipped: list[str], progress: bool = False
                ) -> Iterator[tuple[Path, Path, np.ndarray]]:
    """``(path, name, image)`` for every readable image of :func:`find_images`; each unreadable or
    missing one is reported on standard error, appended to ``skipped`` and passed over.
    ``progress``: a bar on standard error (the files are listed first, to know how many)."""
    found = list(find_images(paths)) if progress else find_images(paths)
    for path, name in tqdm(found, desc="images", unit="img", disable=not progress, leave=False):
        try:
            image = load_image(path)
        except (FileNotFoundError, ValueError) as e:
            print(f"skipped: {e}", file=sys.stderr)
            skipped.append(str(e))
            continue
        yield path, name, image


def annotate(frame: np.ndarray, faces: Sequence[Face], fps: float | None = None) -> np.ndarray:
    """A copy of a BGR frame with each face's box, track id, emotion and confidence (and the frame
    rate, if given) drawn on it."""
    out = frame.copy()
    scale = max(0.5, min(out.shape[:2]) / 800)
    thickness = max(1, int(2 * scale))
    for face in faces:
        x, y, w, h = face.box
        color = COLORS.get(face.emotion, (0, 255, 0))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, max(2, thickness))
        label = f"{face.emotion} {face.confidence:.0%}"
        if face.track_id is not None:
            label = f"#{face.track_id} {label}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, thickness)
        top = max(y - th - base - 4, 0)
        cv2.rectangle(out, (x, top), (x + tw + 6, top + th + base + 4), color, -1)
        cv2.putText(out, label, (x + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(out, f"{fps:.1f} FPS", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2, cv2.LINE_AA)
    return out


def describe(faces: Sequence[Face]) -> list[str]:
    """One line per face: box, emotion and confidence."""
    return [f"face {i}: box (x={f.box[0]}, y={f.box[1]}, w={f.box[2]}, h={f.box[3]}) -> {f.emotion} "
            f"({f.confidence:.1%})" for i, f in enumerate(faces)]


class FpsMeter:
    """Frames per second, smoothed over the last few frames."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing, self.fps, self.frames = smoothing, 0.0, 0
        self._last = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        rate = 1 / max(now - self._last, 1e-6)
        self.fps = rate if self.frames == 0 else self.smoothing * self.fps + (1 - self.smoothing) * rate
        self._last, self.frames = now, self.frames + 1
        return self.fps


def open_video(source: str | int) -> tuple[cv2.VideoCapture, float, int]:
    """A capture for a video file or a camera index, its frame rate (30 if unknown) and frame count
    (0 if unknown), or an error that says why not."""
    if isinstance(source, str) and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such video file")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        what = f"camera {source}" if isinstance(source, int) else f"{source}"
        raise ValueError(f"{what}: cannot open it (no such device, busy, or an unknown format or codec)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and 0 < fps < 1000 else 30.0
    return capture, fps, max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
