"""The ``yuface`` wheel's detector keeps memory on every call: how much, on its own.

    python benchmarks/yuface_leak.py [--calls 2000] [--size 640x480]

Calls ``yuface.c_detect`` (YuNet, the default detector) on the same frame ``--calls`` times and
prints the process's resident memory growth per call, after a warm-up; ferkit's service recycles
its worker processes (``ServiceConfig.max_requests_per_worker``) so that this cannot grow without bound.
"""

from __future__ import annotations

import argparse
import resource

import numpy as np
import yuface
from common import rss_kib


def resident_kib() -> int:
    """Resident memory now, in KiB (Linux: from /proc; elsewhere the peak so far)."""
    return rss_kib() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    for _ in range(50):  # warm-up: allocator pools, first-call buffers
        yuface.c_detect(frame)
    before = resident_kib()
    for _ in range(args.calls):
        yuface.c_detect(frame)
    grown = resident_kib() - before
    print(f"{args.calls} calls on a {width}x{height} frame: resident memory +{grown / 1024:.1f} MiB, "
          f"{grown / args.calls:.1f} KiB per call")


if __name__ == "__main__":
    main()
