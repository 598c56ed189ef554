"""Emotions of the faces in an image: ``python demo_image.py PATH [--out annotated.jpg]``
(same as ``ferkit image``; with no PATH, the bundled example photos)."""

import sys

from ferkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["image", *sys.argv[1:]]))
