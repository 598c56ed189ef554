"""A still photo end to end (decode excluded): detect every face and classify it, side by side with peers.

    python benchmarks/still_speed.py [--image PHOTO [--as-is]] [--model fast fast7 ...] [--repeats 30] [--json OUT.json]

Times ``EmotionPredictor(model).predict(image)`` (the default detector and backend; ``--model``: bundled
models' names or model files, default ``fast``) on a 640x480 BGR
photo (default: the bundled obama.jpg fitted into 640x480; ``--as-is``: the photo at its own size), with ONNX
Runtime's default threads and with each thread count of ``--threads``; with ``--full-detect`` also with YuNet
run on the whole frame instead of the shrunk copy it detects on by default; and, when the ``fer`` package
(mini-Xception, OpenCV Haar detector) is installed, its ``FER().detect_emotions`` on the same array. Medians
of ``--repeats`` calls after ``WARM_UP`` warm-up calls; run it on idle cores.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys

import cv2
import numpy as np
from common import machine, timed_median

from ferkit.apps.media import EXAMPLES_DIR
from ferkit.infer.detection import YuNetDetector
from ferkit.infer.predictor import EmotionPredictor

# Calls before timing: with 2, the first predictor timed in a process measured 36 ms and the same one
# timed again later 28 ms (2026-11-30); 10 leave no such order effect.
WARM_UP = 10


def photo(path: str | None, as_is: bool = False) -> np.ndarray:
    """The photo, fitted into a 640x480 canvas (letterboxed, gray), or ``as_is``."""
    image = cv2.imread(path or str(EXAMPLES_DIR / "obama.jpg"))
    if as_is:
        return image
    scale = min(640 / image.shape[1], 480 / image.shape[0])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    y, x = (480 - image.shape[0]) // 2, (640 - image.shape[1]) // 2
    canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
    return canvas


def timed_predict(predictor: EmotionPredictor, image: np.ndarray, repeats: int, **detector) -> dict:
    """Median milliseconds of ``predictor.predict(image)`` after ``WARM_UP`` calls, and the faces it found."""
    for _ in range(WARM_UP):
        faces = predictor.predict(image, **detector)
    return {"ms": 1000 * timed_median(lambda: predictor.predict(image, **detector), repeats),
            "faces": [(f.box, f.emotion) for f in faces]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image")
    parser.add_argument("--as-is", action="store_true", help="the photo at its own size, not fitted into 640x480")
    parser.add_argument("--full-detect", action="store_true",
                        help="also time YuNet on the whole frame (no shrunk copy) with the first model")
    parser.add_argument("--model", nargs="+", default=["fast"], help="bundled models' names or model files")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="*", default=[1])
    parser.add_argument("--tta", nargs="+", default=["none"], help="EmotionPredictor's test-time views, each timed")
    parser.add_argument("--json")
    args = parser.parse_args()
    image = photo(args.image, args.as_is)
    results = {}
    if args.full_detect:
        whole = YuNetDetector(max_side=max(image.shape[:2]))
        whole.smallest = whole.min_size  # no shrinking for small faces either: the frame as it is
        predictor = EmotionPredictor(args.model[0], tta=args.tta[0])
        views = "" if args.tta[0] == "none" else f", tta {args.tta[0]}"
        name = f"ferkit {args.model[0]} ({predictor.backend}, default ORT threads{views}, YuNet on the whole frame)"
        results[name] = timed_predict(predictor, image, args.repeats, detector=whole)
    for model, tta, threads in itertools.product(args.model, args.tta, [None, *args.threads]):
        predictor = EmotionPredictor(model, threads=threads, tta=tta)
        views = "" if tta == "none" else f", tta {tta}"
        name = f"ferkit {model} ({predictor.backend}, {'default' if threads is None else threads} ORT threads{views})"
        results[name] = timed_predict(predictor, image, args.repeats)
    try:
        from fer.fer import FER  # fer 25.x; older releases also export it from the package
    except ImportError:
        print("the fer package is not installed: no peer to compare with", file=sys.stderr)
    else:
        detector = FER()
        for _ in range(WARM_UP):
            found = detector.detect_emotions(image)
        results["fer (mini-Xception, Haar)"] = {
            "ms": 1000 * timed_median(lambda: detector.detect_emotions(image), args.repeats),
            "faces": [(f["box"], max(f["emotions"], key=f["emotions"].get)) for f in found]}
    for name, r in results.items():
        print(f"{name:55s} {r['ms']:7.1f} ms  {r['faces']}")
    if args.json:
        record = {"command": "python benchmarks/still_speed.py " + " ".join(sys.argv[1:]),
                  "date": datetime.date.today().isoformat(), "machine": machine(),
                  "image": "x".join(map(str, image.shape[1::-1])),
                  "results": results}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1, default=str)


if __name__ == "__main__":
    main()
