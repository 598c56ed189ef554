"""Train a recipe once per seed and report how far its 4-class accuracy moves from seed to seed.

    python benchmarks/seeds.py --recipe cpu --seeds 0 1 2 --data ../shared/data/fer2013.csv.gz --reports runs/seeds/cpu

Seed N trains through benchmarks/accuracy.py into ``<reports>/seed<N>/<recipe>/``. A seed whose
``summary.json`` is already there is not trained again, so an interrupted study goes on where it
stopped, and a run made earlier with the same flags can be copied in as its seed.
``<reports>/seeds.json`` lists each seed's accuracies with their median, mean, standard deviation,
min and max. Compare two settings on their PublicTest figures; PrivateTest only reports.
Extra flags (``--lr 4e-3``...) pass through to ``ferkit train``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from accuracy import run

# the figures of summary.json's "4-class" entry that seeds.json collects
FIGURES = {
    "val_accuracy": "PublicTest, the validation score that chose the epoch",
    "public_test_accuracy": "PublicTest, the chosen checkpoint scored with the recipe's --tta",
    "accuracy": "PrivateTest, scored with the recipe's --tta",
}


def spread(values: list[float]) -> dict:
    """Median, mean, sample standard deviation, min and max of per-seed accuracies."""
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reports", required=True, help="the study's folder: seed<N>/<recipe>/ and seeds.json")
    parser.add_argument("--recipe", default="seed")
    args, rest = parser.parse_known_args()  # everything else is `ferkit train`'s own flags
    if "--seed" in rest:
        parser.error("give the seeds with --seeds")
    command = "python benchmarks/seeds.py " + " ".join(sys.argv[1:])

    per_seed = {}
    for seed in args.seeds:
        reports = Path(args.reports) / f"seed{seed}"
        summary_path = reports / args.recipe / "summary.json"
        if summary_path.exists():
            print(f"seed {seed}: already trained, reading {summary_path}")
            summary = json.loads(summary_path.read_text())
        else:
            summary = run([4], str(reports), ["--recipe", args.recipe, "--seed", str(seed), *rest], command)
        per_seed[seed] = {**summary["4-class"], "date": summary["date"], "machine": summary["machine"]}

    study = {
        "command": command,
        "figures": FIGURES,
        "seeds": {str(seed): {key: record[key] for key in (*FIGURES, "best_epoch", "train_seconds", "date", "machine")}
                  for seed, record in per_seed.items()},
        **{key: spread([record[key] for record in per_seed.values()]) for key in FIGURES},
    }
    Path(args.reports, "seeds.json").write_text(json.dumps(study, indent=2) + "\n")
    print(json.dumps(study, indent=2))


if __name__ == "__main__":
    main()
