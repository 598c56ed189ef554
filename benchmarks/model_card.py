"""Measure a shipped model for its card: what users get, on every label set and face set we hold.

    python benchmarks/model_card.py --model fast --data ../shared/data/fer2013.csv.gz \
        --folder ../shared/wild/muxspace-dev --json reports/wild/card_fast.json

Through ``EmotionPredictor`` with each backend a user may get (ONNX Runtime, the int8 export, the
default on CPUs; PyTorch fp32), no test-time views: accuracy and balanced accuracy on PublicTest and
PrivateTest against FER2013's labels and FER+'s majority labels, on a labelled folder of in-the-wild
face crops, and the robustness benchmark on PublicTest (PyTorch). The JSON is what the card
(``src/ferkit/weights/<model>.json``) quotes under ``accuracy``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from common import machine
from robustness import robustness
from wild import score

from ferkit.data import load_fer2013, split_labels
from ferkit.infer.predictor import EmotionPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fast", help="a bundled model's name or a checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--folder", required=True, help="labelled in-the-wild face crops")
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    arrays = load_fer2013(args.data)
    card: dict = {"command": "python benchmarks/model_card.py " + " ".join(sys.argv[1:]),
                  "date": datetime.date.today().isoformat(), "machine": machine(), "no_test_time_views": True}
    for backend in args.backends:
        predictor = EmotionPredictor(args.model, device="cpu", backend=backend)
        key = predictor.backend
        card[key] = {}
        for split in ("PublicTest", "PrivateTest"):
            result = score(predictor, arrays, split, args.folder)
            card[key][split] = {labels: {k: round(v, 4) for k, v in result[labels].items()
                                         if k in ("accuracy", "balanced_accuracy", "num_samples")}
                                for labels in ("fer2013", "ferplus")}
            card[key]["wild"] = {k: round(v, 4) for k, v in result["wild"].items()
                                 if k in ("accuracy", "balanced_accuracy", "num_samples")}
            print(f"{key} {split}: {card[key][split]} | wild {card[key]['wild']}", flush=True)
    predictor = EmotionPredictor(args.model, device="cpu", backend="torch")
    pixels, _ = arrays.split("PublicTest")
    r = robustness(predictor, pixels, split_labels(arrays, "PublicTest", len(predictor.class_names)))
    card["robustness_PublicTest_torch"] = {"clean": round(r["clean"], 4),
                                           "mean_corrupted": round(r["mean_corrupted"], 4),
                                           "drop": {k: round(v, 4) for k, v in r["drop"].items()}}
    print(f"robustness: {card['robustness_PublicTest_torch']}")
    with open(args.json, "w") as f:
        json.dump(card, f, indent=1)


if __name__ == "__main__":
    main()
