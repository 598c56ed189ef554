"""Score checkpoints where the default model is used: in-the-wild faces, FER+ labels and FER2013 labels.

    python benchmarks/wild.py --data ../shared/data/fer2013.csv.gz --folder ../shared/wild/muxspace-dev \
        --tau 0 0.5 1 --json reports/wild/PublicTest.json ferkit runs/wild/r1/fer_resnet18_best.pth
    python benchmarks/wild.py ... --ensemble fast fast7      # also the two as one model (mean probabilities)
    python benchmarks/wild.py --data ... --folder ../shared/wild/muxspace-dev ../shared/posed/ckplus-dev \
        --tta flip ferkit runs/teachers/fastbank/fer_resnet18_best.pth   # reports/teachers/PLAN.md's rule

For each checkpoint (``ferkit``: the bundled model) and each ``tau``, through ``EmotionPredictor``'s
PyTorch backend in fp32 with the test-time views ``--tta`` (default: none, one view, what
reports/wild/PLAN.md's rules read), on ``--split`` (PublicTest by default):
- ``wild``: balanced accuracy on the first labelled folder of face crops (classified as they are),
  and ``folders``: the same for each folder given,
- ``ferplus``: accuracy against FER+'s majority labels (rows without one left out),
- ``fer2013``: accuracy against FER2013's own labels (and balanced accuracy for both label sets).
``tau`` > 0 applies post-hoc logit adjustment (Menon et al. 2021): ``tau * log(prior)`` is taken off
the logits of the labels the network fits, the prior being their frequency in FER2013's Training
split (``--prior labels``) or that of the class each label is merged into (``--prior classes``: each
class's probability is multiplied by ``prior ** -tau``); it is a change of the last layer's bias, so a
chosen tau can ship inside the weights.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch
from common import machine

from ferkit.calibration import training_log_prior
from ferkit.data import load_fer2013, merge_columns, split_labels
from ferkit.defaults import TTA_MODES
from ferkit.evaluation import classification_metrics, trust_metrics
from ferkit.folders import evaluate_folder
from ferkit.infer.predictor import EmotionPredictor

SCORES = ("accuracy", "balanced_accuracy", "num_samples", "confusion_matrix", "per_class", "calibration",
          "risk_coverage")


class Ensemble:
    """Several predictors as one: the mean of their probabilities, in the first one's classes (a 7-class
    model's merged into 4 where the first has 4)."""

    def __init__(self, predictors: list[EmotionPredictor]) -> None:
        self.predictors, self.class_names = predictors, predictors[0].class_names

    def predict_crops(self, faces) -> np.ndarray:
        k = len(self.class_names)
        merged = [merge_columns(p.predict_crops(faces), k) if len(p.class_names) == 7 and k == 4
                  else p.predict_crops(faces) for p in self.predictors]
        return np.mean(merged, axis=0)


def score_split(predictor: EmotionPredictor | Ensemble, arrays, split: str) -> dict:
    """Accuracy, balanced accuracy and trust figures on one FER2013 split, against FER2013's labels
    (``fer2013``) and FER+'s majority (``ferplus``, rows without one left out)."""
    pixels, _ = arrays.split(split)
    probabilities = predictor.predict_crops(list(pixels))
    predicted = probabilities.argmax(1)
    k = len(predictor.class_names)
    out = {}
    for labels in ("fer2013", "ferplus"):
        y = split_labels(arrays, split, k, labels)
        kept = y >= 0
        m = {**classification_metrics(y[kept], predicted[kept], predictor.class_names),
             **trust_metrics(probabilities[kept], y[kept])}
        out[labels] = {key: m[key] for key in SCORES}
    return out


def score_folders(predictor: EmotionPredictor | Ensemble, folders: str | list[str]) -> dict[str, dict]:
    """The same figures on each folder of labelled face crops (classified as they are), by folder name."""
    folders = [folders] if isinstance(folders, str) else list(folders)
    out = {}
    for folder in folders:
        w = evaluate_folder(predictor, folder, cropped=True)
        out[Path(folder).name] = {key: w[key] for key in SCORES}
    return out


def score(predictor: EmotionPredictor | Ensemble, arrays, split: str, folders: str | list[str]) -> dict:
    """What the rule reads for one split and the crop folders: :func:`score_split`'s, ``folders``
    (:func:`score_folders`), ``wild`` the first folder's, ``rule_mean`` the mean of every folder's
    balanced accuracy and FER+'s accuracy."""
    out = score_split(predictor, arrays, split)
    out["folders"] = score_folders(predictor, folders)
    out["wild"] = next(iter(out["folders"].values()))
    measures = [f["balanced_accuracy"] for f in out["folders"].values()] + [out["ferplus"]["accuracy"]]
    out["rule_mean"] = sum(measures) / len(measures)
    return out


def summary(name: str, r: dict) -> str:
    """One line of what the rule reads, for the log."""
    folders = " | ".join(f"{k} balanced {v['balanced_accuracy']:.4f}" for k, v in r["folders"].items())
    return (f"{name}: {folders} | FER+ acc {r['ferplus']['accuracy']:.4f} "
            f"(bal {r['ferplus']['balanced_accuracy']:.4f}) | FER2013 acc {r['fer2013']['accuracy']:.4f} "
            f"(bal {r['fer2013']['balanced_accuracy']:.4f}) | mean(folders, FER+) {r['rule_mean']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint paths, or 'ferkit' for the bundled model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--folder", required=True, nargs="+", help="labelled face crops, one folder per label (the "
                        "first is 'wild'; several: each scored, all in the rule's mean)")
    parser.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time views (default: none)")
    parser.add_argument("--split", default="PublicTest")
    parser.add_argument("--tau", nargs="+", type=float, default=[0.0])
    parser.add_argument("--prior", choices=("labels", "classes"), default="labels",
                        help="whose Training frequency tau takes off: each fitted label's, or its class's")
    parser.add_argument("--ensemble", action="store_true", help="also score the checkpoints as one model: the mean "
                        "of their probabilities (no tau)")
    parser.add_argument("--json")
    args = parser.parse_args()
    arrays = load_fer2013(args.data)
    results = []
    members = []
    for checkpoint in args.checkpoints:
        predictor = EmotionPredictor(None if checkpoint == "ferkit" else checkpoint, device="cpu", backend="torch",
                                     tta=args.tta)
        members.append(predictor)
        model = predictor.classifier.model
        bias = model.fc.bias.detach().clone()
        log_prior = training_log_prior(arrays, model, args.prior)
        for tau in args.tau:
            with torch.no_grad():
                model.fc.bias.copy_(bias - tau * log_prior)
            r = {"checkpoint": checkpoint, "tau": tau, "prior": args.prior,
                 **score(predictor, arrays, args.split, args.folder)}
            results.append(r)
            print(summary(f"{checkpoint} tau {tau}", r), flush=True)
        with torch.no_grad():
            model.fc.bias.copy_(bias)
    if args.ensemble:
        r = {"checkpoint": "+".join(args.checkpoints), "tau": 0.0,
             **score(Ensemble(members), arrays, args.split, args.folder)}
        results.append(r)
        print(summary("ensemble", r), flush=True)
    if args.json:
        record = {"command": "python benchmarks/wild.py " + " ".join(sys.argv[1:]), "split": args.split,
                  "tta": args.tta,
                  "date": datetime.date.today().isoformat(), "machine": machine(), "results": results}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
