"""A labelled face folder as the 48x48 grayscale crops EmotionPredictor makes of its images, as PNGs:
the same folder to `ferkit evaluate --folder DIR --cropped` and `benchmarks/wild.py` (the same pixels
reach the network), at a tenth of the size, so that it travels to a device machine with the data.

    python benchmarks/faces48.py ../shared/wild/muxspace-dev .wild48

Every image under each label folder is written as ``OUT/<label>/<name>.png``; an unreadable one is
reported and skipped, as the evaluator would.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from ferkit.apps.media import load_image
from ferkit.infer.predictor import resize_face


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    written = 0
    for path in sorted(p for p in args.folder.glob("*/*") if p.is_file() and p.suffix.lower() != ".csv"):
        try:
            face = resize_face(load_image(path))
        except ValueError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        target = args.out / path.parent.name / (path.stem + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), face):  # grayscale uint8
            raise OSError(f"{target}: could not be written")
        written += 1
    print(f"wrote {written} faces to {args.out}")


if __name__ == "__main__":
    main()
