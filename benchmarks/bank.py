"""Score teachers of the bank from their committed logits alone (no weights needed): each teacher, and
the mean of their probabilities, as a student of them would be scored.

    python benchmarks/bank.py --data ../shared/data/fer2013.csv.gz \
        reports/teachers/fast reports/teachers/fast7 reports/teachers/cpu --json reports/teachers/bank.json

For each teacher and for their mean (4 classes, at ``--temperature``), with the default views (flip)
and with every view the files hold: PublicTest accuracy on FER2013's and FER+'s labels, the balanced
accuracy of each face folder the teachers were scored on, and reports/teachers/PLAN.md's rule mean
(the folders' balanced accuracies and FER+'s accuracy, averaged).

With ``--select N`` it picks a bank instead of scoring the one given: greedy ensemble selection with
replacement (Caruana et al. 2004) among the teachers given, starting from ``--start``: each of at most
N steps adds the teacher (a repeat weighs it more) that most raises the rule mean while the mean's
FER2013 PublicTest accuracy stays at or above ``--min-fer2013``; it stops when no pick raises it.
The chosen list (repeats included) is what ``ferkit train --teacher`` takes.

With ``--match-prior REF`` every teacher's 4-class probabilities are first reweighted by the one
factor per class (renormalized) that makes its mean Training probabilities (flip views) those of the
teacher REF: the teachers then differ in what they rank above what, not in how often they call each
class.

With ``--student`` (a student of these teachers, itself in the bank) it also says how closely the
student follows their mean, on Training (what it was taught) and PublicTest: the top-1 agreement
and KL(mean || student), beside each teacher's own (one network of the bank: a member, itself a
share of the mean) and, with ``--init``, the model the student started from.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys

import numpy as np
from common import machine

from ferkit.data import load_fer2013
from ferkit.train import distill
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


@dataclasses.dataclass
class Matched(Teacher):
    """A teacher whose 4-class probabilities are reweighted by ``exp(bias)`` (and renormalized)."""

    bias: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4, np.float32))

    def probabilities(self, logits, num_labels, temperature=1.0, views="all"):
        p = super().probabilities(logits, num_labels, temperature, views) * np.exp(self.bias)
        return p / p.sum(1, keepdims=True)


def match_prior(teacher: Teacher, reference: Teacher, arrays) -> Matched:
    """``teacher`` reweighted so that its mean Training probabilities (4 classes, flip views) are
    ``reference``'s: ``ferkit train --teacher-prior``'s reweighting (:func:`distill.match_prior`)."""
    rows = arrays.rows("Training")
    target = reference.probabilities(reference.logits[rows], 4, views="flip").mean(0)
    _, weights = distill.match_prior(teacher.probabilities(teacher.logits[rows], 4, views="flip"), target)
    return Matched(**vars(teacher), bias=np.log(weights))


def rule_mean(teachers: list[Teacher], arrays, temperature: float) -> tuple[float, float]:
    """The rule mean and FER2013 PublicTest accuracy of ``teachers``' mean (flip views)."""
    s = with_rule_mean(teacher_scores(teachers, arrays, temperature=temperature))["flip"]
    return s["rule mean"], s["PublicTest fer2013"]


def select(candidates: list[Teacher], start: Teacher, steps: int, min_fer2013: float, arrays,
           temperature: float) -> list[dict]:
    """Greedy ensemble selection with replacement (see the module's docstring): each step's bank and
    its scores, the first being ``start`` alone."""
    bank = [start]
    best, fer = rule_mean(bank, arrays, temperature)
    trail = [{"bank": [start.path.name], "rule mean": best, "PublicTest fer2013": fer}]
    for _ in range(steps):
        tried = [(*rule_mean(bank + [t], arrays, temperature), i) for i, t in enumerate(candidates)]
        kept = [(mean, fer, i) for mean, fer, i in tried if fer >= min_fer2013 and mean > best]
        if not kept:
            break
        best, fer, i = max(kept)
        bank.append(candidates[i])
        trail.append({"bank": [t.path.name for t in bank], "rule mean": best, "PublicTest fer2013": fer})
        print(f"+ {candidates[i].path.name}: rule mean {best:.2%}, FER2013 {fer:.2%}", flush=True)
    return trail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teachers", nargs="+", help="teacher folders of the bank (reports/teachers/NAME)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--student", help="a student of these teachers (its folder in the bank): how closely it "
                        "follows their mean")
    parser.add_argument("--init", help="with --student: the teacher folder of the model it started from (--init)")
    parser.add_argument("--select", type=int, metavar="N", help="pick a bank of at most N more teachers from "
                        "those given (greedy, with replacement) instead of scoring their mean")
    parser.add_argument("--start", help="with --select: the teacher folder the bank starts from")
    parser.add_argument("--min-fer2013", type=float, default=0.0, help="with --select: the lowest FER2013 "
                        "PublicTest accuracy (0-1) the bank may have")
    parser.add_argument("--match-prior", metavar="REF", help="first reweight every teacher's 4-class probabilities, "
                        "one factor per class (recorded as their logs, 'bias'), so that their mean over Training is "
                        "the teacher folder REF's")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.init and not args.student:
        parser.error("--init needs --student")
    if (args.start is None) != (args.select is None) or (args.select is not None and args.student):
        parser.error("--select needs --start (and no --student)")
    arrays = load_fer2013(args.data)
    try:
        teachers = [read_teacher(p, arrays) for p in args.teachers]
        student = read_teacher(args.student, arrays) if args.student else None
        init = read_teacher(args.init, arrays) if args.init else None
        start = read_teacher(args.start, arrays) if args.start else None
        if args.match_prior:
            reference = read_teacher(args.match_prior, arrays)
            teachers = [match_prior(t, reference, arrays) for t in teachers]
            start = match_prior(start, reference, arrays) if start else None
    except ValueError as e:
        sys.exit(f"error: {e}")
    record = {"command": "python benchmarks/bank.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "machine": machine()}
    if args.match_prior:
        record["bias"] = {str(t.path): [round(float(b), 4) for b in t.bias] for t in teachers}
    if start is not None:
        record["selection"] = select(teachers, start, args.select, args.min_fer2013, arrays, args.temperature)
        teachers = [next(t for t in [start, *teachers] if t.path.name == name)
                    for name in record["selection"][-1]["bank"]]
        print("chosen: --teacher " + " ".join(str(t.path) for t in teachers))
    results = {str(t.path): with_rule_mean(teacher_scores([t], arrays, temperature=args.temperature))
               for t in teachers}
    if len(teachers) > 1:
        results["mean of " + " + ".join(t.path.name for t in teachers)] = with_rule_mean(
            teacher_scores(teachers, arrays, temperature=args.temperature))
    for name, scores in results.items():
        for views, s in scores.items():
            print(f"{name} ({views} views): " + " | ".join(f"{k} {v:.2%}" for k, v in s.items()), flush=True)
    record["results"] = results
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
