"""How much does a crop's framing cost? Each face set scored with its crops zoomed in or out.

    python benchmarks/framing.py --data ../shared/data/fer2013.csv.gz \
        --folder ../shared/wild/muxspace-dev ../shared/posed/ckplus-dev --json reports/wild/framing.json

Face sets frame their crops differently: FER2013's include hair and chin with a margin, the CK+48
crops of ckplus-dev are cut at the forehead and chin. Each crop is reframed by a factor ``s``
before the model sees it: ``s`` < 1 keeps the centred square of ``s`` times its side (the face
larger, as a tighter crop shows it), ``s`` > 1 sets it on a replicated border ``s`` times its side
(the face smaller, as a looser crop shows it). The scale at which a set scores best says how far
its framing is from what the model learnt; a model robust to framing scores alike at every scale.
Through ``EmotionPredictor`` (bundled model or checkpoint, its default backend and ``--tta``):
FER2013 and FER+ accuracy on ``--split``, balanced accuracy on each folder of crops.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import cv2
import numpy as np
from common import machine

from ferkit.data import load_fer2013, split_labels
from ferkit.defaults import TTA_MODES
from ferkit.evaluation import classification_metrics
from ferkit.folders import list_folder
from ferkit.infer.detection import to_gray
from ferkit.infer.predictor import EmotionPredictor, load_image

SCALES = (0.8, 0.9, 1.0, 1.1, 1.2)


def reframe(face: np.ndarray, scale: float) -> np.ndarray:
    """``face`` (square, grayscale) zoomed in (``scale`` < 1: its centred square of that share of the
    side) or out (``scale`` > 1: on a replicated border, the side that many times larger)."""
    side = face.shape[0]
    if scale < 1:
        keep = max(1, round(side * scale))
        start = (side - keep) // 2
        return face[start:start + keep, start:start + keep]
    pad = round(side * (scale - 1) / 2)
    return cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else face


def square_gray(image: np.ndarray) -> np.ndarray:
    """A crop in grayscale (as the predictor converts it), its centred square."""
    gray = to_gray(image)
    h, w = gray.shape
    side = min(h, w)
    return gray[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]


def score_scales(predictor: EmotionPredictor, faces: list[np.ndarray], labels: np.ndarray,
                 scales: tuple[float, ...]) -> dict[str, dict]:
    """Accuracy and balanced accuracy of ``faces`` against ``labels`` at each framing scale."""
    names = predictor.class_names
    out = {}
    for s in scales:
        predicted = predictor.predict_crops([reframe(f, s) for f in faces]).argmax(1)
        m = classification_metrics(labels, predicted, names)
        out[f"{s:g}"] = {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                         "recall": {n: m["per_class"][n]["recall"] for n in names}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="bundled model name or checkpoint (default: fast)")
    parser.add_argument("--data", help="FER2013 file (FER2013 and FER+ accuracy on --split)")
    parser.add_argument("--split", default="PublicTest")
    parser.add_argument("--folder", nargs="*", default=[], help="labelled folders of face crops")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--tta", choices=TTA_MODES, default="flip")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    predictor = EmotionPredictor(args.model, tta=args.tta)
    n = len(predictor.class_names)
    sets: dict[str, dict] = {}
    if args.data:
        arrays = load_fer2013(args.data)
        pixels, _ = arrays.split(args.split)
        fer = split_labels(arrays, args.split, n)
        sets[f"{args.split} fer2013"] = score_scales(predictor, list(pixels), fer, tuple(args.scales))
        plus = split_labels(arrays, args.split, n, "ferplus")
        keep = plus >= 0
        sets[f"{args.split} ferplus"] = score_scales(predictor, list(pixels[keep]), plus[keep], tuple(args.scales))
    for folder in args.folder:
        files, labels, _ = list_folder(folder, n)
        faces = [square_gray(load_image(f)) for f in files]
        sets[Path(folder).name] = score_scales(predictor, faces, labels, tuple(args.scales))

    for name, by_scale in sets.items():
        key = "balanced_accuracy" if name in {Path(f).name for f in args.folder} else "accuracy"
        print(f"{name:28s} " + " | ".join(f"{s} {100 * r[key]:.2f}%" for s, r in by_scale.items()))
    if args.json:
        result = {"model": args.model or "fast", "tta": args.tta, "split": args.split, "sets": sets,
                  "machine": machine(), "date": datetime.date.today().isoformat()}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
