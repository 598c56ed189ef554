"""Does framing faces by their landmarks (ferkit.infer.align) beat cropping them by their boxes?

    python benchmarks/align.py --data ../shared/data/fer2013.csv.gz \
        --folder ../shared/wild/muxspace-dev ../shared/posed/ckplus-dev --photos ../shared/photos \
        --json reports/inference/align/align.json

Every face is found by YuNet and classified by the model (default: the bundled one, with its
default views) three ways: as it is (the whole crop resized), cut by its box with the detector's
margin (ferkit before alignment), and aligned by its five landmarks at each ``--zoom``
(ferkit.infer.align.ZOOM is the one chosen). Measured on:

- FER2013 PublicTest, each 48x48 face enlarged 3x on a replicated border (as crop_margin.py does);
  ``--template`` also prints the median landmarks there, ferkit.infer.align.FER2013_LANDMARKS;
- labelled folders (balanced accuracy over the 4 classes); images under 96 pixels (ckplus-dev's
  48x48 crops) are enlarged the same way first, and faces not found are scored as they are for
  every way, so that all ways score the same images; ``--rotate`` degrees: each image also turned
  by +/- that much (alternately), the head roll a box crop keeps and an alignment undoes;
- ``--photos``: the faces of unlabelled photos, each photo also turned by +/- ``--rotate``: how
  often a face keeps its class (a face found in both, matched by its centre);
- ``--speed``: the time of one box crop and one aligned crop of the bundled obama.jpg's face (median of 2,000).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import numpy as np
from common import machine, timed_median

from ferkit.data import load_fer2013, map_labels
from ferkit.defaults import IMAGE_SUFFIXES
from ferkit.folders import list_folder
from ferkit.infer.align import FER2013_LANDMARKS, similarity, warp_face
from ferkit.infer.detection import create_detector, to_gray
from ferkit.infer.predictor import EmotionPredictor, crop_face, load_image

UPSCALE, BORDER, SMALL = 3, 0.25, 96
ZOOMS = (1.0, 1.1, 1.2)


def enlarge(gray: np.ndarray) -> np.ndarray:
    """A small crop enlarged 3x on a replicated border: a frame the detector finds it in."""
    side = gray.shape[1] * UPSCALE
    pad = int(side * BORDER)
    big = cv2.resize(gray, (side, gray.shape[0] * UPSCALE), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


def rotate(gray: np.ndarray, degrees: float) -> np.ndarray:
    height, width = gray.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(gray, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def target(zoom: float) -> np.ndarray:
    centre = (48 - 1) / 2
    return (FER2013_LANDMARKS - centre) * zoom + centre


def ways(gray: np.ndarray, detection, margin: float, zooms) -> dict[str, np.ndarray]:
    """The face cut every way: box, and aligned at each zoom (None where no face was found)."""
    if detection is None:
        return {}
    out = {"box": crop_face(gray, detection.box, margin)}
    for z in zooms:
        out[f"aligned {z:g}"] = warp_face(gray, similarity(detection.landmarks, target(z)))
    return out


def scores(predictor: EmotionPredictor, crops: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([predictor.predict_crops(v[i : i + 256]) for i in range(0, len(v), 256)]).argmax(1)
            for k, v in crops.items()}


def balanced(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([(predicted[labels == k] == k).mean() for k in np.unique(labels)]))


def collect(images, detector, zooms) -> tuple[dict[str, list], int]:
    """Each image's crops, every way; an image without a face is its whole self resized, every way."""
    names = ["as it is", "box", *(f"aligned {z:g}" for z in zooms)]
    crops: dict[str, list] = {k: [] for k in names}
    found = 0
    for gray in images:
        frame = enlarge(gray) if max(gray.shape[:2]) < SMALL else gray
        detections = detector.detect(frame)
        cut = ways(frame, detections[0] if detections else None, detector.margin, zooms)
        found += bool(cut)
        for k in names:
            crops[k].append(cut.get(k, gray) if k != "as it is" else gray)
    return crops, found


def fer2013(predictor, detector, data: str, zooms, template: bool) -> dict:
    pixels, emotion = load_fer2013(data).split("PublicTest")
    labels = map_labels(emotion, len(predictor.class_names))
    names = ["as it is", "box", *(f"aligned {z:g}" for z in zooms)]
    crops: dict[str, list] = {k: [] for k in names}
    kept, points = [], []
    for i, face in enumerate(pixels):
        frame = enlarge(face)
        detections = detector.detect(frame)
        if not detections:
            continue
        kept.append(i)
        points.append((np.array(detections[0].landmarks, float) - int(48 * UPSCALE * BORDER)) / UPSCALE)
        for k, v in {"as it is": face, **ways(frame, detections[0], detector.margin, zooms)}.items():
            crops[k].append(v)
    record = {"images": len(pixels), "detected": len(kept),
              "accuracy": {k: float((p == labels[kept]).mean()) for k, p in scores(predictor, crops).items()}}
    if template:
        record["median_landmarks"] = np.median(np.array(points), 0).round(2).tolist()
    return record


def folder(predictor, detector, root: str, zooms, degrees: float) -> dict:
    files, labels, skipped = list_folder(root, len(predictor.class_names))
    images = [to_gray(load_image(f)) for f in files]
    crops, found = collect(images, detector, zooms)
    record = {"images": len(files), "detected": found, "skipped_folders": skipped,
              "balanced": {k: balanced(p, labels) for k, p in scores(predictor, crops).items()}}
    if degrees:
        turned = [rotate(g, degrees if i % 2 else -degrees) for i, g in enumerate(images)]
        crops, found = collect(turned, detector, zooms)
        turned_scores = {k: balanced(p, labels) for k, p in scores(predictor, crops).items()}
        record[f"turned {degrees:g}"] = {"detected": found, "balanced": turned_scores}
    return record


def classes(predictor, frame: np.ndarray, detection, margin: float, zooms) -> np.ndarray:
    """One face's class, every way (box, then each zoom)."""
    return predictor.predict_crops(list(ways(frame, detection, margin, zooms).values())).argmax(1)


def photos(predictor, detector, root: str, zooms, degrees: float) -> dict:
    """How often a face keeps its class when its photo turns by +/- degrees, box against aligned."""
    keys = ["box", *(f"aligned {z:g}" for z in zooms)]
    kept = {k: [] for k in keys}
    rolls = []
    for path in sorted(p for p in Path(root).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        gray = to_gray(load_image(path))
        base = detector.detect(gray)
        for d in base:
            (lx, ly), (rx, ry) = d.landmarks[:2]
            rolls.append(abs(np.degrees(np.arctan2(ry - ly, rx - lx))))
        before = [classes(predictor, gray, d, detector.margin, zooms) for d in base]
        for sign in (1, -1):
            height, width = gray.shape
            matrix = cv2.getRotationMatrix2D((width / 2, height / 2), sign * degrees, 1.0)
            turned = cv2.warpAffine(gray, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
            after = detector.detect(turned)
            for n, d in enumerate(base):
                cx, cy = matrix @ np.array([d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2, 1])
                match = [a for a in after if abs(a.box[0] + a.box[2] / 2 - cx) < d.box[2] / 3
                         and abs(a.box[1] + a.box[3] / 2 - cy) < d.box[3] / 3]
                if not match:
                    continue
                now = classes(predictor, turned, match[0], detector.margin, zooms)
                for j, k in enumerate(keys):
                    kept[k].append(bool(now[j] == before[n][j]))
    return {"faces": len(rolls), "median_roll_degrees": round(statistics.median(rolls), 1) if rolls else None,
            "rolls_over_10_degrees": int(sum(r > 10 for r in rolls)), "pairs": len(kept["box"]),
            "class_kept": {k: float(np.mean(v)) for k, v in kept.items()}}


def speed() -> dict:
    """Microseconds per face: a box crop against an aligned one (fit and resampling), same face."""
    from ferkit.apps.media import EXAMPLES_DIR
    from ferkit.infer.align import align_face

    gray = to_gray(cv2.imread(str(EXAMPLES_DIR / "obama.jpg")))
    detector = create_detector("yunet")
    (face, *_) = detector.detect(gray)
    box = timed_median(lambda: crop_face(gray, face.box, detector.margin), 2000) * 1e6
    aligned = timed_median(lambda: align_face(gray, face.landmarks), 2000) * 1e6
    return {"image": "obama.jpg", "shape": list(gray.shape), "box_crop_us": round(box, 1),
            "aligned_crop_us": round(aligned, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="fer2013.csv(.gz): score PublicTest, enlarged")
    parser.add_argument("--folder", nargs="*", default=[], help="labelled face folders")
    parser.add_argument("--photos", help="a folder of unlabelled photos")
    parser.add_argument("--rotate", type=float, default=15.0, help="degrees each image is also turned by (0: none)")
    parser.add_argument("--zoom", type=float, nargs="+", default=list(ZOOMS))
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--template", action="store_true", help="also the median landmarks on FER2013 faces")
    parser.add_argument("--speed", action="store_true", help="also time one box crop against one aligned crop")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    predictor = EmotionPredictor(args.model, device="cpu")
    detector = create_detector("yunet")
    results = {"machine": machine(), "model": str(predictor.checkpoint_path), "backend": predictor.backend,
               "views": predictor.tta, "zooms": args.zoom}
    if args.data:
        results["fer2013_PublicTest"] = r = fer2013(predictor, detector, args.data, args.zoom, args.template)
        print(f"FER2013 PublicTest enlarged ({r['detected']}/{r['images']} found): "
              + ", ".join(f"{k} {v:.2%}" for k, v in r["accuracy"].items()))
        if args.template:
            print(f"  median landmarks: {r['median_landmarks']}")
    for root in args.folder:
        results[root] = r = folder(predictor, detector, root, args.zoom, args.rotate)
        print(f"{root} ({r['detected']}/{r['images']} found), balanced: "
              + ", ".join(f"{k} {v:.2%}" for k, v in r["balanced"].items()))
        if args.rotate:
            t = r[f"turned {args.rotate:g}"]
            print(f"  turned +/-{args.rotate:g} ({t['detected']} found): "
                  + ", ".join(f"{k} {v:.2%}" for k, v in t["balanced"].items()))
    if args.photos:
        results["photos"] = r = photos(predictor, detector, args.photos, args.zoom, args.rotate)
        print(f"{args.photos}: {r['faces']} faces, median roll {r['median_roll_degrees']} degrees "
              f"({r['rolls_over_10_degrees']} over 10); class kept when turned +/-{args.rotate:g} "
              f"({r['pairs']} pairs): " + ", ".join(f"{k} {v:.1%}" for k, v in r["class_kept"].items()))
    if args.speed:
        results["speed"] = r = speed()
        print(f"one face of {r['image']} ({r['shape'][1]}x{r['shape'][0]}): box crop {r['box_crop_us']:.0f} us, "
              f"aligned {r['aligned_crop_us']:.0f} us")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {args.json} ({machine()})")


if __name__ == "__main__":
    main()
