"""Train ferkit's ResNet-18 on FER2013 (same as ``ferkit train``); ``--help`` lists the flags."""

import sys

from ferkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
