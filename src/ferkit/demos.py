"""The image and webcam demos: detect faces, classify them, draw the result.

    ferkit image [PATH ...] [--out annotated.jpg]    # no PATH: the bundled example photos
    ferkit webcam [--camera 0]                       # q quits, s saves a screenshot
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ferkit.inference import EmotionPredictor, FacePrediction

EXAMPLES_DIR = Path(__file__).parent / "examples"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
COLORS = {"angry": (40, 40, 230), "disgust": (40, 140, 40), "fear": (160, 60, 160), "sad": (200, 120, 40),
          "happy": (40, 200, 240), "surprise": (230, 160, 40), "neutral": (200, 200, 200)}


def example_images() -> list[Path]:
    """The photos bundled with ferkit (public-domain portraits; see ``examples/README.md``)."""
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def annotate(frame: np.ndarray, faces: Sequence[FacePrediction]) -> np.ndarray:
    """A copy of a BGR frame with each face's box, emotion and confidence drawn on it."""
    out = frame.copy()
    scale = max(0.5, min(out.shape[:2]) / 800)
    for face in faces:
        x, y, w, h = face.box
        color = COLORS.get(face.emotion, (0, 255, 0))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, max(2, int(2 * scale)))
        label = f"{face.emotion} {face.probabilities[face.index]:.0%}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, max(1, int(2 * scale)))
        top = max(y - th - base - 4, 0)
        cv2.rectangle(out, (x, top), (x + tw + 6, top + th + base + 4), color, -1)
        cv2.putText(out, label, (x + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0),
                    max(1, int(2 * scale)), cv2.LINE_AA)
    return out


def read_image(path: str | Path) -> np.ndarray:
    """A BGR image from disk, or a ValueError that says why not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image


def describe(faces: Sequence[FacePrediction]) -> list[str]:
    return [f"face {i}: box (x={f.box[0]}, y={f.box[1]}, w={f.box[2]}, h={f.box[3]}) -> {f.emotion} "
            f"({f.probabilities[f.index]:.1%})" for i, f in enumerate(faces)]


def image_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferkit image", description="Detect faces and their emotions in images.")
    parser.add_argument("paths", nargs="*", help="image files (default: the bundled example photos)")
    parser.add_argument("--out", help="annotated output: a file for one image, else a folder "
                                      "(default: <name>_annotated.jpg in the folder 'annotated/')")
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    paths = [Path(p) for p in args.paths] or example_images()
    predictor = EmotionPredictor(args.model, device=args.device)
    failures = 0
    for path in paths:
        try:
            image = read_image(path)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        faces = predictor.predict_frame(image)
        print(f"{path}: {len(faces) or 'no'} face{'s' if len(faces) != 1 else ''} found")
        for line in describe(faces):
            print("  " + line)
        if args.out and len(paths) == 1 and Path(args.out).suffix:
            target = Path(args.out)
        else:
            target = Path(args.out or "annotated") / f"{path.stem}_annotated.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), annotate(image, faces)):
            print(f"error: could not write {target}", file=sys.stderr)
            failures += 1
            continue
        print(f"  annotated image: {target}")
    return 1 if failures else 0


def _has_gui() -> bool:
    """opencv-python-headless (our dependency) has no windows; opencv-python does."""
    try:
        cv2.namedWindow("ferkit")
        return True
    except cv2.error:
        return False


def webcam_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferkit webcam", description="Live emotion recognition from a camera.")
    parser.add_argument("--camera", default="0", help="camera index, or a video file path (default: 0)")
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: never)")
    parser.add_argument("--screenshots", default=".", help="folder for 's' screenshots (default: .)")
    args = parser.parse_args(argv)

    source = int(args.camera) if args.camera.isdigit() else args.camera
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        print(f"error: cannot open camera {args.camera!r} (no such device, or it is busy)", file=sys.stderr)
        return 1
    predictor = EmotionPredictor(args.model, device=args.device)
    gui = _has_gui()
    if not gui:
        print("no display window available (opencv-python-headless): printing results instead; "
              "for a window, `pip install \"opencv-python<5\"` in place of opencv-python-headless. "
              "Ctrl+C stops.", file=sys.stderr)
    frames, fps, last = 0, 0.0, time.perf_counter()
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                if frames == 0:
                    print(f"error: camera {args.camera!r} gave no frames", file=sys.stderr)
                    return 1
                break
            faces = predictor.predict_frame(frame)
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if frames else 1 / max(now - last, 1e-6)
            last, frames = now, frames + 1
            shown = annotate(frame, faces)
            cv2.putText(shown, f"{fps:.1f} FPS", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2, cv2.LINE_AA)
            if gui:
                cv2.imshow("ferkit", shown)
                key = cv2.waitKey(1) & 0xFF
                if key == ord("q"):
                    break
                if key == ord("s"):
                    target = Path(args.screenshots) / f"ferkit_{time.strftime('%Y%m%d_%H%M%S')}_{frames}.jpg"
                    cv2.imwrite(str(target), shown)
                    print(f"screenshot saved: {target}")
            else:
                summary = ", ".join(f"{f.emotion} {f.probabilities[f.index]:.0%}" for f in faces) or "no face"
                print(f"frame {frames}: {summary} ({fps:.1f} FPS)")
            if args.max_frames and frames >= args.max_frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        if gui:
            cv2.destroyAllWindows()
    return 0
