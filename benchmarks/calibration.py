"""How honest a model's probabilities are, before and after temperature scaling.

    python benchmarks/calibration.py --model fast --data ../shared/data/fer2013.csv.gz \
        --folder ../shared/wild/muxspace-dev --json reports/trust/calibration_fast.json

Through ``EmotionPredictor`` (default backend and test-time views: what users get): the network's
raw logits of each view on PrivateTest (FER2013's labels and FER+'s majority) and on a labelled folder
of face crops, scored at temperature 1, at the model's stored temperature and at the one fitted now on
PublicTest (FER2013's labels), the views' probabilities averaged: expected calibration error (15 bins),
NLL, Brier, mean confidence against accuracy, and the risk-coverage table at the fitted temperature.
Beside each ECE, its floor: what a perfectly calibrated model with the same probabilities would score on
as many faces (``calibration.ece_floor``, median and 95th percentile of 200 draws); an ECE under the
95th percentile is within the estimator's noise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np
from common import machine

from ferkit.calibration import calibration_metrics, ece_floor, fit_temperature, raw_logits, risk_coverage
from ferkit.data import load_fer2013, split_labels
from ferkit.defaults import DEFAULT_TTA, TTA_MODES
from ferkit.folders import list_folder
from ferkit.infer.predictor import EmotionPredictor, load_image, resize_face
from ferkit.views import average_views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fast", help="a bundled model's name or a checkpoint / ONNX file")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--data", required=True)
    parser.add_argument("--folder", help="labelled face crops, one folder per label")
    parser.add_argument("--tta", choices=TTA_MODES, default=DEFAULT_TTA, help="test-time views, averaged")
    parser.add_argument("--json")
    args = parser.parse_args()
    predictor = EmotionPredictor(args.model, device="cpu", backend=args.backend)
    k = len(predictor.class_names)
    arrays = load_fer2013(args.data)
    public = raw_logits(predictor.classifier, arrays.split("PublicTest")[0], args.tta)
    fitted = fit_temperature(public, split_labels(arrays, "PublicTest", k, "fer2013"))
    sets = {}
    private = raw_logits(predictor.classifier, arrays.split("PrivateTest")[0], args.tta)
    for labels in ("fer2013", "ferplus"):
        y = split_labels(arrays, "PrivateTest", k, labels)
        sets[f"PrivateTest ({labels} labels)"] = (private[:, y >= 0], y[y >= 0])
    if args.folder:
        files, y, _ = list_folder(args.folder, k)
        faces = np.stack([resize_face(load_image(f)) for f in files])
        sets[f"{args.folder} (crops)"] = (raw_logits(predictor.classifier, faces, args.tta), y)
    record = {"command": "python benchmarks/calibration.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "machine": machine(), "model": str(predictor.checkpoint_path),
              "backend": predictor.backend, "tta": args.tta, "stored_temperature": predictor.classifier.temperature,
              "fitted_temperature": fitted, "sets": {}}
    print(f"{predictor.checkpoint_path.name} ({predictor.backend}): temperature fitted on PublicTest {fitted:g}, "
          f"stored {predictor.classifier.temperature:g}")
    print(f"{'faces':45s} {'T':>6s} {'ECE':>7s} {'NLL':>7s} {'Brier':>7s} {'conf':>7s} {'acc':>7s}")
    for name, (logits, y) in sets.items():
        record["sets"][name] = {}
        for t in dict.fromkeys((1.0, predictor.classifier.temperature, fitted)):  # raw, as stored, as fitted now
            m = calibration_metrics(average_views(logits, t), y)
            record["sets"][name][f"T={t:g}"] = {key: m[key] for key in ("ece", "nll", "brier", "mean_confidence",
                                                                        "accuracy")}
            print(f"{name:45s} {t:6.3f} {m['ece']:7.2%} {m['nll']:7.4f} {m['brier']:7.4f} "
                  f"{m['mean_confidence']:7.2%} {m['accuracy']:7.2%}")
        calibrated = average_views(logits, fitted)
        floor = record["sets"][name]["ece_floor"] = ece_floor(calibrated)
        print(f"    ECE of a perfectly calibrated model with these probabilities at T={fitted:g}: "
              f"{floor['median']:.2%} (median), {floor['p95']:.2%} (95th percentile)")
        record["sets"][name]["risk_coverage"] = risk_coverage(calibrated, y)
        print("    accuracy at coverage " + ", ".join(f"{r['coverage']:.0%}: {r['accuracy']:.2%} "
                                                      f"(confidence >= {r['min_confidence']:.2f})"
                                                      for r in record["sets"][name]["risk_coverage"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
