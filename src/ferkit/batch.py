"""``ferkit predict``: every face in images and folders, as CSV or JSON lines.

    ferkit predict photos/ more.jpg --output faces.csv [--annotate annotated/]
    ferkit predict photos/ --format jsonl              # to standard output

One row per face: file, face index, box, emotion and the probability of every class. Rows are
written (and flushed) as each image is done, so an interrupted run keeps what it wrote; unreadable
files are reported on standard error and skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

import cv2

from ferkit.inference import FacePrediction
from ferkit.media import annotate, read_images
from ferkit.pipeline import add_pipeline_arguments, pipeline_from_args

FORMATS = ("csv", "jsonl")


class FaceWriter:
    """Writes face rows as CSV (a header, then ``file,face,x,y,w,h,emotion,<class>...``) or as JSON
    lines (``{"file", "face", "box", "emotion", "probabilities": {class: p}}``)."""

    def __init__(self, stream: TextIO, fmt: str, class_names: Sequence[str]) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
        self.stream, self.fmt, self.class_names = stream, fmt, tuple(class_names)
        if fmt == "csv":
            self.csv = csv.writer(stream)
            self.csv.writerow(["file", "face", "x", "y", "w", "h", "emotion", *self.class_names])

    def write(self, file: str, faces: Sequence[FacePrediction]) -> None:
        for i, face in enumerate(faces):
            probabilities = [round(float(p), 6) for p in face.probabilities]
            if self.fmt == "csv":
                self.csv.writerow([file, i, *face.box, face.emotion, *probabilities])
            else:
                record = {"file": file, "face": i, "box": list(face.box), "emotion": face.emotion,
                          "probabilities": dict(zip(self.class_names, probabilities, strict=True))}
                self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def predict_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferkit predict", description="Emotions of every face in images and "
                                     "folders (recursively), as CSV or JSON lines.")
    parser.add_argument("paths", nargs="+", help="image files and folders")
    parser.add_argument("--output", "-o", help="file to write (default: standard output)")
    parser.add_argument("--format", choices=FORMATS, help="csv or jsonl (default: from --output's suffix, else csv)")
    parser.add_argument("--annotate", metavar="DIR", help="also write annotated copies into DIR")
    add_pipeline_arguments(parser, video=False)
    args = parser.parse_args(argv)
    fmt = args.format or ("jsonl" if args.output and Path(args.output).suffix in (".jsonl", ".json") else "csv")

    pipeline = pipeline_from_args(args)
    images = faces_found = failures = 0
    skipped: list[str] = []
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="") if args.output else nullcontext(sys.stdout) as stream:
        writer = FaceWriter(stream, fmt, pipeline.class_names)
        for path, name, image in read_images(args.paths, skipped):
            faces = pipeline.process_image(image)
            writer.write(str(path), faces)
            images, faces_found = images + 1, faces_found + len(faces)
            if not faces:
                print(f"{path}: no face found", file=sys.stderr)
            if args.annotate:
                target = Path(args.annotate) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), annotate(image, faces)):
                    print(f"error: could not write {target}", file=sys.stderr)
                    failures += 1
    failures += len(skipped)
    print(f"{images} image{'s' if images != 1 else ''}, {faces_found} face{'s' if faces_found != 1 else ''}"
          f"{f', {failures} skipped' if failures else ''}" + (f"; results in {args.output}" if args.output else ""),
          file=sys.stderr)
    return 1 if failures else 0
