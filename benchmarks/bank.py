"""Score teachers of the bank from their committed logits alone (no weights needed): each teacher, and
the mean of their probabilities, as a student of them would be scored.

    python benchmarks/bank.py --data ../shared/data/fer2013.csv.gz \
        reports/teachers/fast reports/teachers/fast7 reports/teachers/cpu --json reports/teachers/bank.json

For each teacher and for their mean (4 classes, at ``--temperature``), with the default views (flip)
and with every view the files hold: PublicTest accuracy on FER2013's and FER+'s labels, the balanced
accuracy of each face folder the teachers were scored on, and reports/teachers/PLAN.md's rule mean
(the folders' balanced accuracies and FER+'s accuracy, averaged).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np
from common import machine

from ferkit.data import load_fer2013
from ferkit.train.distill import read_teacher, teacher_scores


def with_rule_mean(scores: dict) -> dict:
    """``scores`` (per view set) with each set's rule mean added."""
    out = {}
    for views, s in scores.items():
        measures = [v for k, v in s.items() if k.endswith(" balanced")] + [s["PublicTest ferplus"]]
        out[views] = {**s, "rule mean": round(float(np.mean(measures)), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teachers", nargs="+", help="teacher folders of the bank (reports/teachers/NAME)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    arrays = load_fer2013(args.data)
    teachers = [read_teacher(p, arrays) for p in args.teachers]
    results = {str(t.path): with_rule_mean(teacher_scores([t], arrays, temperature=args.temperature))
               for t in teachers}
    if len(teachers) > 1:
        results["mean of " + " + ".join(t.path.name for t in teachers)] = with_rule_mean(
            teacher_scores(teachers, arrays, temperature=args.temperature))
    for name, scores in results.items():
        for views, s in scores.items():
            print(f"{name} ({views} views): " + " | ".join(f"{k} {v:.2%}" for k, v in s.items()), flush=True)
    if args.json:
        record = {"command": "python benchmarks/bank.py " + " ".join(sys.argv[1:]),
                  "date": datetime.date.today().isoformat(), "machine": machine(), "results": results}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
