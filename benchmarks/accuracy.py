"""Train a recipe and report its PublicTest and PrivateTest accuracy, for 4 and/or 7 classes.

    python benchmarks/accuracy.py --recipe cpu --data ../shared/data/fer2013.csv.gz [--classes 4 7]

Each class count trains into ``reports/<recipe>/`` (4 classes) or ``reports/<recipe>/7class/``
with the usual reports and ``train.log``; ``reports/<recipe>/summary.json`` collects the numbers,
the machine and the date. The checkpoint is chosen on PublicTest only; PrivateTest is scored once.
Extra flags (``--epochs 5``, ``--device cuda``...) pass through to ``ferkit train``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import sys
from pathlib import Path

import torch
from common import machine

from ferkit.cli.models import add_train_arguments, config_from_args
from ferkit.train import train


class Tee(io.TextIOBase):
    """Write to the console and a log file at once."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)


def run(classes: list[int], reports: str, train_argv: list[str], command: str) -> dict:
    """Train ``ferkit train`` with ``train_argv`` once per class count; write and return the summary."""
    train_parser = argparse.ArgumentParser(add_help=False)
    add_train_arguments(train_parser)
    summary: dict = {"command": command, "date": datetime.date.today().isoformat()}
    for n in classes:
        cfg = config_from_args(train_parser.parse_args([*train_argv, "--classes", str(n)]))
        out = Path(reports) / cfg.recipe / ("" if n == 4 else "7class")
        cfg.out = str(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "w") as log, contextlib.redirect_stdout(Tee(sys.stdout, log)):
            record = train(cfg)
        summary[f"{n}-class"] = {k: record[k] for k in ("val_accuracy", "public_test_accuracy", "accuracy",
                                                         "tta", "best_epoch", "train_seconds", "device")}
        summary["recipe"] = cfg.recipe
        summary["machine"] = machine(torch.device(record["device"]))
    path = Path(reports) / summary["recipe"] / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 7], choices=(4, 7))
    parser.add_argument("--reports", default="reports", help="parent folder of reports/<recipe>/")
    args, rest = parser.parse_known_args()  # everything else is `ferkit train`'s own flags
    summary = run(args.classes, args.reports, rest, "python benchmarks/accuracy.py " + " ".join(sys.argv[1:]))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
