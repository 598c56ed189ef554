"""Accuracy under the corruptions real cameras and detectors produce (``ferkit.corruptions``), side by side.

    python benchmarks/robustness.py --data ../shared/data/fer2013.csv.gz --split PublicTest \
        --json reports/wild/robustness-PublicTest.json ferkit runs/wild/r1/fer_resnet18_best.pth

For each model (``ferkit``: the bundled one), through ``EmotionPredictor``'s PyTorch backend in fp32
with no test-time augmentation (what users run): the clean accuracy on the split, the accuracy under
each corruption at severities 1-3 (every corruption seeded, the same faces for every model), the
mean corrupted accuracy and each corruption's drop from clean (mean over severities).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys

import numpy as np
from common import machine

from ferkit.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from ferkit.data import load_fer2013, split_labels
from ferkit.infer.predictor import EmotionPredictor


def robustness(predictor: EmotionPredictor, pixels: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Clean and corrupted accuracy of one predictor on faces ``pixels`` with labels ``y`` (-1: left out)."""
    kept = y >= 0
    acc = {}
    for name, s in [("clean", 0), *((n, s) for n in CORRUPTIONS for s in SEVERITIES)]:
        faces = pixels if s == 0 else corrupt(pixels, name, s, seed)
        predicted = predictor.predict_crops(list(faces)).argmax(1)
        acc[f"{name}/{s}" if s else name] = float((predicted[kept] == y[kept]).mean())
    clean = acc["clean"]
    per = {n: statistics.mean(acc[f"{n}/{s}"] for s in SEVERITIES) for n in CORRUPTIONS}
    return {"clean": clean, "mean_corrupted": statistics.mean(per.values()),
            "drop": {n: clean - a for n, a in per.items()}, "accuracy": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="checkpoint paths, or 'ferkit' for the bundled model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="PublicTest")
    parser.add_argument("--labels", default="fer2013", choices=("fer2013", "ferplus"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    arrays = load_fer2013(args.data)
    pixels, _ = arrays.split(args.split)
    results = {}
    for model in args.models:
        predictor = EmotionPredictor(None if model == "ferkit" else model, device="cpu", backend="torch",
                                     tta="none")  # one view, as its recorded runs
        y = split_labels(arrays, args.split, len(predictor.class_names), args.labels)
        results[model] = robustness(predictor, pixels, y, args.seed)
        print(f"{model}: clean {results[model]['clean']:.4f}, mean corrupted {results[model]['mean_corrupted']:.4f} "
              f"(drop {results[model]['clean'] - results[model]['mean_corrupted']:.4f})", flush=True)
    print(f"\n{'drop from clean':<16}" + "".join(f"{m[-28:]:>30}" for m in results))
    for n in CORRUPTIONS:
        print(f"{n:<16}" + "".join(f"{results[m]['drop'][n]:>30.4f}" for m in results))
    if args.json:
        record = {"command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]), "split": args.split,
                  "labels": args.labels, "images": len(pixels), "date": datetime.date.today().isoformat(),
                  "machine": machine(), "results": results}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
