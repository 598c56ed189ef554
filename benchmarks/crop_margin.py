"""Which crop margin makes a detector's box look like a FER2013 image?

    python benchmarks/crop_margin.py --data ../shared/data/fer2013.csv.gz [--detector haar yunet]

FER2013 faces are already framed; each one is enlarged 3x and set on a replicated border, the
detector is run on it, and the face is cropped back from the detector's box with each candidate
margin and classified by the bundled model. The margin that scores best on PublicTest is the one
to use (``margin`` in ferkit/detection.py); PrivateTest is printed for it too. Also printed: the
margin implied by geometry (the median box size against the 48x48 frame) and the accuracy on the
original 48x48 images of the same faces, the ceiling a perfect crop would reach.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import numpy as np
from common import machine

from ferkit.data import load_fer2013, map_labels
from ferkit.infer.detection import DETECTORS, create_detector
from ferkit.infer.predictor import EmotionPredictor, crop_face

UPSCALE, BORDER = 3, 0.25
MARGINS = (-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def detected_faces(pixels: np.ndarray, detector) -> tuple[list[int], list[np.ndarray], list[tuple]]:
    """Per image: the enlarged frame and its largest detected box (images without one are left out)."""
    side = pixels.shape[1] * UPSCALE
    pad = int(side * BORDER)
    kept, frames, boxes = [], [], []
    for i, face in enumerate(pixels):
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        frame = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = detector(frame)
        if found:
            kept.append(i)
            frames.append(frame)
            boxes.append(found[0])
    return kept, frames, boxes


def accuracy(predictor: EmotionPredictor, frames, boxes, labels: np.ndarray, margin: float) -> float:
    crops = [crop_face(f, b, margin) for f, b in zip(frames, boxes, strict=True)]
    probs = np.concatenate([predictor.predict_crops(crops[i : i + 256]) for i in range(0, len(crops), 256)])
    return float((probs.argmax(1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--detector", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--out", default="reports/inference/crop_margin.json")
    args = parser.parse_args()

    predictor = EmotionPredictor(args.model, device="cpu", tta="none")  # one view, as its recorded runs
    arrays = load_fer2013(args.data)
    results = {"machine": machine(), "model": str(predictor.checkpoint_path), "backend": predictor.backend,
               "margins": list(MARGINS), "detectors": {}}
    for name in args.detector:
        detector = create_detector(name)
        record = {}
        for split in ("PublicTest", "PrivateTest"):
            pixels, emotion = arrays.split(split)
            labels = map_labels(emotion, len(predictor.class_names))
            kept, frames, boxes = detected_faces(pixels, detector)
            side = pixels.shape[1] * UPSCALE
            implied = statistics.median((side / max(b[2], b[3]) - 1) / 2 for b in boxes)
            original = predictor.predict_crops(list(pixels[kept])).argmax(1)
            record[split] = {
                "images": len(pixels), "detected": len(kept), "implied_margin": round(implied, 3),
                "accuracy_original_crop": float((original == labels[kept]).mean()),
                "accuracy_by_margin": {str(m): accuracy(predictor, frames, boxes, labels[kept], m) for m in MARGINS},
            }
        by_margin = record["PublicTest"]["accuracy_by_margin"]
        best = max(MARGINS, key=lambda m: by_margin[str(m)])
        record["best_margin_on_PublicTest"] = best
        record["PrivateTest_at_best_margin"] = record["PrivateTest"]["accuracy_by_margin"][str(best)]
        results["detectors"][name] = record
        public, private = record["PublicTest"], record["PrivateTest"]
        print(f"{name}: detected {public['detected']}/{public['images']} PublicTest faces; implied margin "
              f"{public['implied_margin']:.2f}; original 48x48 crops {public['accuracy_original_crop']:.2%}")
        for m in MARGINS:
            print(f"  margin {m:.2f}: PublicTest {public['accuracy_by_margin'][str(m)]:.2%}  "
                  f"PrivateTest {private['accuracy_by_margin'][str(m)]:.2%}")
        print(f"  best on PublicTest: {best:.2f} -> PrivateTest {record['PrivateTest_at_best_margin']:.2%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out} ({machine()})")


if __name__ == "__main__":
    main()
