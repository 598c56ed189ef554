"""Live emotions from a webcam: ``python demo_webcam.py [--camera N]``; q quits, s saves a screenshot
(same as ``ferkit webcam``)."""

import sys

from ferkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["webcam", *sys.argv[1:]]))
