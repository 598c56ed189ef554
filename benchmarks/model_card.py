"""Measure a shipped model for its card: what users get, on every label set and face set we hold.

    python benchmarks/model_card.py --model fast --data ../shared/data/fer2013.csv.gz \
        --folder ../shared/wild/muxspace-dev ../shared/posed/ckplus-dev --json reports/wild/card_fast.json
    python benchmarks/model_card.py --json reports/wild/card_fast.json --markdown   # its tables, for the card
    python benchmarks/model_card.py --json reports/wild/card_fast7.json --update-card src/ferkit/weights/fast7.json

Through ``EmotionPredictor`` with each backend a user may get (ONNX Runtime, the int8 export, the
default on CPUs; PyTorch fp32), with ``--tta`` views (default: EmotionPredictor's): accuracy and
balanced accuracy on PublicTest and PrivateTest against FER2013's labels and FER+'s majority labels,
on labelled folders of face crops (the first: in-the-wild faces, the card's "wild"), and the
robustness benchmark on PublicTest (PyTorch; ``--no-robustness`` leaves it out: with twelve views it
runs for over an hour on 2 cores).
The JSON is what the card (``src/ferkit/weights/<model>.json``) quotes under ``accuracy``;
``--update-card`` writes them there (from a JSON measured ``--no-robustness``, for an export of
unchanged weights, the card keeps its robustness figures and says which command measured them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from common import machine
from robustness import robustness
from wild import score_folders, score_split

from ferkit.data import load_fer2013, split_labels
from ferkit.defaults import DEFAULT_TTA
from ferkit.infer.predictor import EmotionPredictor


def summary(scores: dict) -> dict:
    """The card's figures of one face set: accuracy, balanced accuracy, each class's recall, the
    confusion matrix, calibration (ECE, NLL, Brier) and accuracy at each coverage."""
    return {"accuracy": round(scores["accuracy"], 4), "balanced_accuracy": round(scores["balanced_accuracy"], 4),
            "num_samples": scores["num_samples"],
            "recall": {name: round(c["recall"], 4) for name, c in scores["per_class"].items()},
            "confusion_matrix": scores["confusion_matrix"],
            **{k: round(scores["calibration"][k], 4) for k in ("ece", "nll", "brier", "mean_confidence")},
            "risk_coverage": [{k: round(v, 4) for k, v in r.items()} for r in scores["risk_coverage"]]}


def face_sets(b: dict) -> dict:
    """One backend's figures on each face folder, by name (a card of before ``folders``: its wild one alone)."""
    return b.get("folders", {"muxspace-dev": b["wild"]})


def markdown(card: dict, backend: str) -> str:
    """The card's tables for ``docs/MODEL_CARD.md``: per-class recall, calibration, coverage, robustness."""
    b = card[backend]
    sets = {"PrivateTest, FER2013 labels": b["PrivateTest"]["fer2013"],
            "PrivateTest, FER+ majority": b["PrivateTest"]["ferplus"],
            **{f"{name} crops": f for name, f in face_sets(b).items()}}
    names = list(b["wild"]["recall"])
    lines = [f"| faces ({backend}, T = {b['temperature']:g}) | n | accuracy | balanced | "
             + " | ".join(f"{n} recall" for n in names) + " | ECE | NLL | Brier |",
             "|---|" + "---|" * (len(names) + 6)]
    for name, m in sets.items():
        lines.append(f"| {name} | {m['num_samples']} | {m['accuracy']:.2%} | {m['balanced_accuracy']:.2%} | "
                     + " | ".join(f"{m['recall'][n]:.1%}" if sum(m["confusion_matrix"][i]) else "-"  # no such face
                                  for i, n in enumerate(names))
                     + f" | {m['ece']:.2%} | {m['nll']:.3f} | {m['brier']:.3f} |")
    lines += ["", "| faces | " + " | ".join(f"{r['coverage']:.0%} kept" for r in b["wild"]["risk_coverage"]) + " |",
              "|---|" + "---|" * len(b["wild"]["risk_coverage"])]
    for name, m in sets.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['accuracy']:.1%} (p >= {r['min_confidence']:.2f})"
                                                 for r in m["risk_coverage"]) + " |")
    r = card.get("robustness_PublicTest_torch")
    if r:
        lines += ["", f"Robustness (PublicTest, PyTorch): clean {r['clean']:.2%}, mean corrupted "
                      f"{r['mean_corrupted']:.2%}; drop per corruption: "
                      + ", ".join(f"{k} {v:.1%}" for k, v in sorted(r["drop"].items(), key=lambda kv: -kv[1]))]
    return "\n".join(lines)


BACKEND_KEYS = {"onnxruntime-int8": "onnxruntime_int8", "torch": "pytorch_fp32"}  # views: the card's measured_with


def card_figures(card: dict) -> dict:
    """The figures a bundled model's card JSON (beside its weights) quotes, from this script's JSON."""
    splits = ("PublicTest", "PrivateTest")
    out: dict = {"temperature": {}, "accuracy": {}, "ferplus_accuracy": {}, "balanced_accuracy": {}}
    for backend, key in BACKEND_KEYS.items():
        b = card[backend]
        out["temperature"][key] = b["temperature"]  # each file's own, fitted on its own PublicTest logits
        out["accuracy"][key] = {s: b[s]["fer2013"]["accuracy"] for s in splits}
        out["ferplus_accuracy"][key] = {s: b[s]["ferplus"]["accuracy"] for s in splits}
        out["balanced_accuracy"][key] = {"PrivateTest_fer2013": b["PrivateTest"]["fer2013"]["balanced_accuracy"],
                                         "PrivateTest_ferplus": b["PrivateTest"]["ferplus"]["balanced_accuracy"],
                                         **{name.replace("-", "_"): f["balanced_accuracy"]
                                            for name, f in face_sets(b).items()}}
    int8 = card["onnxruntime-int8"]
    out["ece"] = {"onnxruntime_int8": {"PrivateTest_fer2013": int8["PrivateTest"]["fer2013"]["ece"],
                                       "muxspace_dev": int8["wild"]["ece"]}}
    r = card.get("robustness_PublicTest_torch")
    if r:
        out["robustness_PublicTest_torch"] = {"clean": r["clean"], "mean_corrupted": r["mean_corrupted"]}
    out["measured_with"] = f"{card['command']} (test-time views: {card['tta']}; {card['date']}, {card['machine']})"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fast", help="a bundled model's name or a checkpoint")
    parser.add_argument("--data")
    parser.add_argument("--folder", nargs="+", help="labelled folders of face crops, in-the-wild ones first")
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    parser.add_argument("--json", required=True, help="where the figures go (with --markdown: where they are)")
    parser.add_argument("--markdown", action="store_true", help="print the card's tables from --json, measure nothing")
    parser.add_argument("--update-card", metavar="CARD_JSON",
                        help="write --json's figures into a bundled model's card JSON, measure nothing")
    parser.add_argument("--robustness", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the robustness benchmark on PublicTest (default: yes; without it, "
                             "--update-card keeps the card's, for fp16 weights it did not change)")
    parser.add_argument("--tta", default=DEFAULT_TTA, help=f"test-time views, as EmotionPredictor(tta=) (default: "
                                                          f"{DEFAULT_TTA}, as users run it)")
    args = parser.parse_args()
    if args.update_card:
        measured = json.loads(open(args.json).read())
        missing = [k for k in BACKEND_KEYS if k not in measured]
        if missing:
            parser.error(f"{args.json} lacks {', '.join(missing)}: a card quotes both backends (measure with the "
                         "default --backends)")
        card = json.loads(open(args.update_card).read())
        figures = card_figures(measured)
        if "robustness_PublicTest_torch" not in figures:  # measured --no-robustness: the PyTorch weights' own stay
            if "robustness_PublicTest_torch" not in card:
                parser.error(f"{args.json} lacks the robustness benchmark and {args.update_card} has none to keep")
            before = card["measured_with"].split("; robustness as measured by ")[-1]
            figures["measured_with"] += f"; robustness as measured by {before}"
        card.update(figures)
        with open(args.update_card, "w") as f:
            json.dump(card, f, indent=2)
            f.write("\n")
        return
    if args.markdown:
        card = json.loads(open(args.json).read())
        for backend in (k for k, v in card.items() if isinstance(v, dict) and "wild" in v):
            print(markdown(card, backend) + "\n")
        return
    if not (args.data and args.folder):
        parser.error("--data and --folder are needed to measure")
    arrays = load_fer2013(args.data)
    card: dict = {"command": "python benchmarks/model_card.py " + " ".join(sys.argv[1:]),
                  "date": datetime.date.today().isoformat(), "machine": machine(), "tta": args.tta}
    for backend in args.backends:
        predictor = EmotionPredictor(args.model, device="cpu", backend=backend, tta=args.tta)
        key = predictor.backend
        card[key] = {"temperature": predictor.classifier.temperature}
        for split in ("PublicTest", "PrivateTest"):
            result = score_split(predictor, arrays, split)
            card[key][split] = {labels: summary(result[labels]) for labels in ("fer2013", "ferplus")}
            print(f"{key} {split}: " + ", ".join(f"{labels} acc {card[key][split][labels]['accuracy']:.4f} balanced "
                                                 f"{card[key][split][labels]['balanced_accuracy']:.4f}"
                                                 for labels in ("fer2013", "ferplus")), flush=True)
        card[key]["folders"] = {name: summary(f) for name, f in score_folders(predictor, args.folder).items()}
        card[key]["wild"] = next(iter(card[key]["folders"].values()))
        print(f"{key}: " + " | ".join(f"{name} balanced {f['balanced_accuracy']:.4f}"
                                      for name, f in card[key]["folders"].items()), flush=True)
    if args.robustness:
        predictor = EmotionPredictor(args.model, device="cpu", backend="torch", tta=args.tta)
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
