"""The image and webcam demos: detect faces, classify them, draw the result.

    ferkit image [PATH ...] [--out annotated.jpg]    # no PATH: the bundled example photos
    ferkit webcam [--camera 0]                       # q quits, s saves a screenshot
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

from ferkit.media import IMAGE_SUFFIXES, FpsMeter, annotate, describe, open_video, read_images
from ferkit.pipeline import add_pipeline_arguments, pipeline_from_args

EXAMPLES_DIR = Path(__file__).parent / "examples"


def example_images() -> list[Path]:
    """The photos bundled with ferkit (public-domain portraits; see ``examples/README.md``)."""
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def image_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferkit image", description="Detect faces and their emotions in images.")
    parser.add_argument("paths", nargs="*", help="image files or folders (default: the bundled example photos)")
    parser.add_argument("--out", help="annotated output: a file for one image, else a folder "
                                      "(default: <name>_annotated.jpg in the folder 'annotated/')")
    add_pipeline_arguments(parser, video=False)
    args = parser.parse_args(argv)

    paths = [Path(p) for p in args.paths] or example_images()
    pipeline = pipeline_from_args(args)
    failures: list[str] = []
    for path, _, image in read_images(paths, failures):
        faces = pipeline.process_image(image)
        print(f"{path}: {len(faces) or 'no'} face{'s' if len(faces) != 1 else ''} found")
        for line in describe(faces):
            print("  " + line)
        if args.out and len(paths) == 1 and not paths[0].is_dir() and Path(args.out).suffix:
            target = Path(args.out)
        else:
            target = Path(args.out or "annotated") / f"{path.stem}_annotated.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), annotate(image, faces)):
            print(f"error: could not write {target}", file=sys.stderr)
            failures.append(str(target))
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
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: never)")
    parser.add_argument("--screenshots", default=".", help="folder for 's' screenshots (default: .)")
    add_pipeline_arguments(parser)
    args = parser.parse_args(argv)

    try:
        capture, _, _ = open_video(int(args.camera) if args.camera.isdigit() else args.camera)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    pipeline = pipeline_from_args(args)
    gui = _has_gui()
    if not gui:
        print("no display window available (opencv-python-headless): printing results instead; "
              "for a window, `pip install \"opencv-python<5\"` in place of opencv-python-headless. "
              "Ctrl+C stops.", file=sys.stderr)
    meter = FpsMeter()
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                if meter.frames == 0:
                    print(f"error: camera {args.camera!r} gave no frames", file=sys.stderr)
                    return 1
                break
            faces = pipeline.process(frame)
            fps = meter.tick()
            if gui:
                shown = annotate(frame, faces, fps)
                cv2.imshow("ferkit", shown)
                key = cv2.waitKey(1) & 0xFF
                if key == ord("q"):
                    break
                if key == ord("s"):
                    target = Path(args.screenshots) / f"ferkit_{time.strftime('%Y%m%d_%H%M%S')}_{meter.frames}.jpg"
                    cv2.imwrite(str(target), shown)
                    print(f"screenshot saved: {target}")
            else:
                summary = ", ".join(f"#{f.track_id} {f.emotion} {f.probabilities[f.index]:.0%}" for f in faces)
                print(f"frame {meter.frames}: {summary or 'no face'} ({fps:.1f} FPS)")
            if args.max_frames and meter.frames >= args.max_frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        if gui:
            cv2.destroyAllWindows()
    return 0
