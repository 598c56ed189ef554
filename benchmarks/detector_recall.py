"""How many of the hand-labelled faces each detector finds, and at what precision.

    python benchmarks/detector_recall.py [--photos ../shared/photos] [--iou 0.5]

The nine PASCAL-VOC photos in ``shared/photos`` carry dlib's hand-labelled boxes (43 faces). A
detection counts when it overlaps a labelled face by at least ``--iou`` (each face matched once,
greedily by overlap); recall = found / labelled, precision = matched / detections. Also the median
time per photo. ``api`` is what a user of the Python API gets: the boxes of ``EmotionPredictor().predict(path)``
(the default detector, on the photo as read from disk). Results go to ``reports/inference/detector_recall.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
from common import machine

from ferkit.infer.detection import DETECTORS, create_detector
from ferkit.infer.predictor import EmotionPredictor
from ferkit.infer.tracking import iou

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"


def labelled_faces(photos: Path) -> dict[Path, list[tuple[int, int, int, int]]]:
    """Photo path -> labelled boxes, from dlib's XML files (which name the photos without ``dlib_``)."""
    faces = {}
    for xml in sorted((photos / "annotations").glob("*.xml")):
        for image in ET.parse(xml).getroot().iter("image"):
            boxes = [tuple(int(b.get(k)) for k in ("left", "top", "width", "height")) for b in image.iter("box")]
            faces[photos / f"dlib_{image.get('file')}"] = boxes
    return faces


def match(labelled, detected, threshold: float) -> int:
    pairs = sorted(((iou(g, d), gi, di) for gi, g in enumerate(labelled) for di, d in enumerate(detected)),
                   reverse=True)
    used_g, used_d = set(), set()
    for overlap, gi, di in pairs:
        if overlap >= threshold and gi not in used_g and di not in used_d:
            used_g.add(gi)
            used_d.add(di)
    return len(used_g)


def boxes_of(name: str):
    """``(image, path) -> boxes`` for a detector name, or for ``api`` (what EmotionPredictor().predict finds)."""
    if name == "api":
        predictor = EmotionPredictor()
        return lambda image, path: [f.box for f in predictor.predict(path)]
    detector = create_detector(name)
    return lambda image, path: detector(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--iou", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--detector", nargs="+", choices=(*DETECTORS, "api"), default=[*DETECTORS, "api"])
    parser.add_argument("--out", default="reports/inference/detector_recall.json")
    args = parser.parse_args()

    faces = labelled_faces(args.photos)
    if not faces:
        raise SystemExit(f"no annotations found under {args.photos / 'annotations'}")
    images = {path: cv2.imread(str(path)) for path in faces}
    total = sum(len(b) for b in faces.values())
    results = {"command": "python benchmarks/detector_recall.py " + " ".join(sys.argv[1:]),
               "date": datetime.date.today().isoformat(), "machine": machine(), "photos": len(faces),
               "faces": total, "detectors": {}}
    for name in args.detector:
        detector = boxes_of(name)
        detections, times = {}, []
        for path, image in images.items():
            for _ in range(3):
                start = time.perf_counter()
                detections[path] = detector(image, path)
                times.append(time.perf_counter() - start)
        found_total = sum(len(d) for d in detections.values())
        record = {"detections": found_total, "median_ms_per_photo": 1000 * statistics.median(times)}
        for threshold in args.iou:
            matched = sum(match(faces[p], detections[p], threshold) for p in faces)
            record[f"iou>={threshold}"] = {"found": matched, "recall": matched / total,
                                           "precision": matched / max(found_total, 1)}
            print(f"{name:6s} IoU>={threshold}: found {matched}/{total} faces (recall {matched / total:.1%}), "
                  f"precision {matched / max(found_total, 1):.1%} of {found_total} detections")
        print(f"{name:6s} median {record['median_ms_per_photo']:.1f} ms per photo")
        results["detectors"][name] = record
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out} ({machine()})")


if __name__ == "__main__":
    main()
