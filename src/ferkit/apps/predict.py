"""``ferkit predict`` and ``ferkit image``: every face in images and folders, as CSV or JSON lines,
or printed with annotated copies.

    ferkit predict photos/ more.jpg --output faces.csv [--annotate annotated/]
    ferkit predict photos/ --format jsonl              # to standard output

One row per face: file, face index, box, emotion and the probability of every class. Rows are
written (and flushed) as each image is done, to a temporary file beside ``--output`` that replaces
it once at least one image was read, so an interrupted run keeps what it wrote and a run that reads
nothing (a mistyped folder) leaves an existing file as it was; unreadable files are reported on
standard error and skipped.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from ferkit.apps.media import annotate, describe, distinct, example_images, find_images, read_images, refuse_overwriting
from ferkit.defaults import OUTPUT_FORMATS
from ferkit.infer.explain import draw_explanations
from ferkit.infer.pipeline import FacePipeline
from ferkit.infer.predictor import Face


class FaceWriter:
    """Writes face rows as CSV (a header, then ``file,face,x,y,w,h,emotion,<class>...``) or as JSON
    lines (``{"file", "face", **Face.to_dict()}``: box, emotion, confidence, probabilities...)."""

    def __init__(self, stream: TextIO, fmt: str, class_names: Sequence[str]) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {OUTPUT_FORMATS}")
        self.stream, self.fmt, self.class_names = stream, fmt, tuple(class_names)
        if fmt == "csv":
            self.csv = csv.writer(stream)
            self.csv.writerow(["file", "face", "x", "y", "w", "h", "emotion", *self.class_names])

    def write(self, file: str, faces: Sequence[Face]) -> None:
        for i, face in enumerate(faces):
            if self.fmt == "csv":
                self.csv.writerow([file, i, *face.box, face.emotion, *(round(float(p), 6) for p in face.scores)])
            else:
                self.stream.write(json.dumps({"file": file, "face": i, **face.to_dict()}) + "\n")
        self.stream.flush()


@contextmanager
def staged_output(output: str | None) -> Iterator[tuple[TextIO, list[bool]]]:
    """A stream for ``output`` (standard output if None) and a flag list: set ``flag[0]`` once there is
    something to keep. The rows go to a temporary file beside ``output`` that replaces it on the way
    out (interrupted or not) only if the flag was set; otherwise ``output`` is left untouched."""
    keep = [False]
    if not output:
        yield sys.stdout, keep
        return
    target = Path(output)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    except OSError as e:  # named by the path asked for, not by the temporary file's
        raise type(e)(e.errno, e.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "w", newline="") as stream:
            yield stream, keep
    finally:
        if keep[0]:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        else:
            os.unlink(tmp)


def predict_paths(paths: Sequence[str | Path], pipeline: FacePipeline, output: str | None = None,
                  fmt: str | None = None, annotate_dir: str | None = None, progress: bool = False) -> int:
    """``ferkit predict``: every face of every image under ``paths`` as CSV or JSON lines (to
    ``output``, else standard output; ``fmt`` by default from ``output``'s suffix), and annotated
    copies in ``annotate_dir`` if given; ``progress``: a bar on standard error. Returns the exit
    status: 1 if anything was skipped."""
    fmt = fmt or ("jsonl" if output and Path(output).suffix in (".jsonl", ".json") else "csv")
    found = list(find_images(paths))
    names = dict(zip((p for p, _ in found), distinct([n for _, n in found]), strict=True))
    targets = {p: Path(annotate_dir) / n for p, n in names.items()} if annotate_dir else {}
    refuse_overwriting(list(names), [output, *targets.values()])
    images = faces_found = failures = 0
    skipped: list[str] = []
    with staged_output(output) as (stream, keep):
        writer = FaceWriter(stream, fmt, pipeline.class_names)
        for path, _, image in read_images(paths, skipped, progress):
            faces = pipeline.process_image(image)
            writer.write(str(path), faces)
            keep[0] = True
            images, faces_found = images + 1, faces_found + len(faces)
            if not faces:
                print(f"{path}: no face found", file=sys.stderr)
            if annotate_dir:
                target = targets[path]
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), annotate(image, faces)):
                    print(f"error: could not write {target}", file=sys.stderr)
                    failures += 1
    failures += len(skipped)
    print(f"{images} image{'s' if images != 1 else ''}, {faces_found} face{'s' if faces_found != 1 else ''}"
          f"{f', {failures} skipped' if failures else ''}"
          + (f"; results in {output}" if output and images else f"; {output} left as it was" if output else ""),
          file=sys.stderr)
    return 1 if failures else 0


def show_images(paths: Sequence[str | Path], pipeline: FacePipeline, out: str | None = None,
                explain: str | None = None) -> int:
    """``ferkit image``: print each image's faces and write an annotated copy (``out``: a file for
    one image, else a folder; default ``annotated/<name>_annotated.jpg``). No paths: the bundled
    example photos. ``explain`` (``ferkit explain``): a method of :meth:`EmotionPredictor.explain`,
    whose heat maps are drawn instead of boxes (default ``explained/<name>_explained.jpg``).
    Returns the exit status: 1 if anything failed."""
    paths = [Path(p) for p in paths] or example_images()
    failures: list[str] = []
    kind = "explained" if explain else "annotated"
    found = [p for p, _ in find_images(paths)]
    if out and len(paths) == 1 and not paths[0].is_dir() and Path(out).suffix:
        targets = {paths[0]: Path(out)}
    else:
        targets = dict(zip(found, distinct([Path(out or kind) / f"{p.stem}_{kind}.jpg" for p in found]), strict=True))
    refuse_overwriting(found, list(targets.values()))
    for path, _, image in read_images(paths, failures):
        if explain:
            explanations = pipeline.predictor.explain(image, explain, detector=pipeline.detector)
            faces = [e.face for e in explanations]
            drawn = draw_explanations(image, explanations)
        else:
            faces = pipeline.process_image(image)
            drawn = annotate(image, faces)
        print(f"{path}: {len(faces) or 'no'} face{'s' if len(faces) != 1 else ''} found")
        for line in describe(faces):
            print("  " + line)
        if explain:
            for e in explanations:
                y, x = np.unravel_index(int(e.heatmap.argmax()), e.heatmap.shape)
                fx, fy = e.to_frame(x + 0.5, y + 0.5)
                print(f"  face {e.face.track_id}: {e.method} map strongest at x={fx:.0f}, y={fy:.0f}")
        target = targets[path]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), drawn):
            print(f"error: could not write {target}", file=sys.stderr)
            failures.append(str(target))
            continue
        print(f"  {kind} image: {target}")
    return 1 if failures else 0
