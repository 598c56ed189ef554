"""How long loading FER2013 takes: a naive csv + str.split parse, ferkit's first parse, and a cached load.

    python benchmarks/data_load.py ../shared/data/fer2013.csv.gz [--repeats 3]

Prints the median of each over the repeats. The cache goes to a temporary folder, not the user's.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import tempfile

import numpy as np
from common import machine, timed_median


def naive_parse(path: str) -> np.ndarray:
    """What most FER2013 loaders do: csv rows, then str.split and int() per pixel."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.DictReader(io.TextIOWrapper(f.buffer) if hasattr(f, "buffer") else f))
    return np.array([[int(p) for p in r["pixels"].split()] for r in rows], dtype=np.uint8)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FERKIT_CACHE_DIR"] = cache
        from ferkit.data import load_fer2013, parse_fer2013_csv

        print(f"{machine()}; {args.csv}")
        if not args.skip_naive:
            print(f"naive csv + str.split parse : {timed_median(lambda: naive_parse(args.csv), args.repeats):6.2f} s")
        print(f"ferkit first parse          : {timed_median(lambda: parse_fer2013_csv(args.csv), args.repeats):6.2f} s")
        load_fer2013(args.csv)  # fill the cache
        print(f"ferkit cached load          : {timed_median(lambda: load_fer2013(args.csv), args.repeats):6.2f} s")


if __name__ == "__main__":
    main()
