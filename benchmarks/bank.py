"""Score teachers of the bank from their committed logits alone (no weights needed): each teacher, and
the mean of their probabilities, as a student of them would be scored.

    python benchmarks/bank.py --data ../shared/data/fer2013.csv.gz \
        reports/teachers/fast reports/teachers/fast7 reports/teachers/cpu --json reports/teachers/bank.json

For each teacher and for their mean (4 classes, at ``--temperature``), with the default views (flip)
and with every view the files hold: PublicTest accuracy on FER2013's and FER+'s labels, the balanced
accuracy of each face folder the teachers were scored on, and reports/teachers/PLAN.md's rule mean
(the folders' balanced accuracies and FER+'s accuracy, averaged).

With ``--student`` (a student of these teachers, itself in the bank) it also says how closely the
student follows their mean, on Training (what it was taught) and PublicTest: the top-1 agreement
and KL(mean || student), beside each teacher's own (one network of the bank: a member, itself a
share of the mean) and, with ``--init``, the model the student started from.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np
from common import machine

from ferkit.data import load_fer2013
from ferkit.train.distill import Teacher, mean_probabilities, read_teacher, teacher_scores


def with_rule_mean(scores: dict) -> dict:
    """``scores`` (per view set) with each set's rule mean added."""
    out = {}
    for views, s in scores.items():
        measures = [v for k, v in s.items() if k.endswith(" balanced")] + [s["PublicTest ferplus"]]
        out[views] = {**s, "rule mean": round(float(np.mean(measures)), 4)}
    return out


def follows(teachers: list[Teacher], others: dict[str, Teacher], arrays) -> dict:
    """For Training and PublicTest (4 classes, flip views): how closely each of ``others`` follows
    the mean of ``teachers``' probabilities: top-1 agreement and the mean KL(mean || it), in nats."""
    out = {}
    for split in ("Training", "PublicTest"):
        rows = arrays.rows(split)
        probs = {name: t.probabilities(t.logits[rows], 4, views="flip") for name, t in others.items()}
        mean = mean_probabilities(teachers, lambda t, rows=rows: t.logits[rows], 4, views="flip")
        log_mean = np.log(np.clip(mean, 1e-8, None))
        out[split] = {name: {"agreement": round(float((p.argmax(1) == mean.argmax(1)).mean()), 4),
                             "kl": round(float((mean * (log_mean - np.log(np.clip(p, 1e-8, None)))).sum(1).mean()), 4)}
                      for name, p in probs.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teachers", nargs="+", help="teacher folders of the bank (reports/teachers/NAME)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--student", help="a student of these teachers (its folder in the bank): how closely it "
                        "follows their mean")
    parser.add_argument("--init", help="with --student: the teacher folder of the model it started from (--init)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.init and not args.student:
        parser.error("--init needs --student")
    arrays = load_fer2013(args.data)
    try:
        teachers = [read_teacher(p, arrays) for p in args.teachers]
        student = read_teacher(args.student, arrays) if args.student else None
        init = read_teacher(args.init, arrays) if args.init else None
    except ValueError as e:
        sys.exit(f"error: {e}")
    results = {str(t.path): with_rule_mean(teacher_scores([t], arrays, temperature=args.temperature))
               for t in teachers}
    if len(teachers) > 1:
        results["mean of " + " + ".join(t.path.name for t in teachers)] = with_rule_mean(
            teacher_scores(teachers, arrays, temperature=args.temperature))
    for name, scores in results.items():
        for views, s in scores.items():
            print(f"{name} ({views} views): " + " | ".join(f"{k} {v:.2%}" for k, v in s.items()), flush=True)
    record = {"command": "python benchmarks/bank.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "machine": machine(), "results": results}
    if student is not None:
        others = {"student " + args.student: student}
        if init is not None:
            others["init " + args.init] = init
        others.update({"member " + str(t.path): t for t in teachers})
        record["follows the mean"] = follows(teachers, others, arrays)
        for split, rows in record["follows the mean"].items():
            for name, r in rows.items():
                print(f"{split}: {name} agrees with the mean on {r['agreement']:.2%} (KL {r['kl']:.4f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
