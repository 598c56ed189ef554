"""Score checkpoints with several test-time view sets on one split, and average over the checkpoints.

    python benchmarks/tta.py --data ../shared/data/fer2013.csv.gz --split PublicTest \
        --modes tencrop tencrop_full multiscale --json reports/cpu-tta/PublicTest.json \
        runs/seeds/cpu-repro/seed*/cpu/fer_resnet18_best.pth

Each checkpoint is scored as ``ferkit evaluate --tta MODE`` scores it (in the precision it was
trained to be scored in). The JSON lists every accuracy and seconds, each mode's mean and median
over the checkpoints, the command, the date and the machine. Choose between modes on PublicTest.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

from common import machine

from ferkit.defaults import TTA_MODES
from ferkit.device import resolve_device
from ferkit.evaluation import evaluate_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", required=True, help="fer2013.csv(.gz) or .npz")
    parser.add_argument("--split", default="PublicTest")
    parser.add_argument("--modes", nargs="+", choices=TTA_MODES, default=list(TTA_MODES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    scores: dict[str, dict[str, dict[str, float]]] = {}
    for checkpoint in args.checkpoints:
        scores[checkpoint] = {}
        for mode in args.modes:
            start = time.perf_counter()
            record = evaluate_checkpoint(checkpoint, args.data, args.split, device=args.device, tta=mode)
            seconds = time.perf_counter() - start
            scores[checkpoint][mode] = {"accuracy": record["accuracy"], "seconds": round(seconds, 1)}
            print(f"{checkpoint}  {mode:<13} {record['accuracy']:.4%}  ({seconds:.0f} s)", flush=True)
    summary = {
        mode: {"mean": statistics.fmean(s[mode]["accuracy"] for s in scores.values()),
               "median": statistics.median(s[mode]["accuracy"] for s in scores.values())}
        for mode in args.modes
    }
    print(f"{args.split}, over {len(scores)} checkpoints:")
    for mode, figures in summary.items():
        print(f"  {mode:<13} mean {figures['mean']:.4%}  median {figures['median']:.4%}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "command": "python benchmarks/tta.py " + " ".join(sys.argv[1:]), "split": args.split,
            "date": datetime.date.today().isoformat(), "machine": machine(resolve_device(args.device)),
            "checkpoints": scores, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
