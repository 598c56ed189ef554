"""Inference speed: per-face classification latency and throughput per backend, and end-to-end frames
per second of the video pipeline on 640x480 clips built from the real photos.

    python benchmarks/inference_speed.py [--photos ../shared/photos] [--fer-python .fer/bin/python]

1. Classification, the bundled model: median milliseconds per face at batch 1 and per face at batch
   64 for PyTorch (fp32 eager), ONNX Runtime fp32 and ONNX Runtime int8 (the bundled export).
2. The video pipeline (FacePipeline: detection, tracking, classification, smoothing; decoding and
   drawing not included) on two clips panning and zooming over real photos: one face, and five
   faces tiled from five portraits. For each detector and schedule: frames per second (median of
   ``--repeats``), and the share of the faces found by the full detector on every frame that the
   scheduled pipeline also reports (IoU >= 0.3).
3. With ``--fer-python`` (an interpreter where ``fer`` is installed; it needs tensorflow-cpu and
   ``setuptools<80``), the ``fer`` package's default pipeline (Haar + TFLite mini-Xception) on the
   same frames, side by side.

Results go to ``reports/inference/inference_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import machine, timed_median

from ferkit.infer.detection import detect_faces
from ferkit.infer.pipeline import FacePipeline
from ferkit.infer.predictor import EmotionPredictor
from ferkit.infer.tracking import iou

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"
ONE_FACE = "fr_obama.jpg"
FIVE_FACES = ("deepface_img1.jpg", "deepface_img19.jpg", "deepface_img39.jpg", "deepface_img47.jpg", "fr_biden.jpg")
SCHEDULES = ((1, 1.0), (1, 0.5), (3, 0.5), (5, 0.5))  # (detect every N frames, detection scale)
SIZE = (640, 480)



def pan_zoom(canvas: np.ndarray, frames: int, zoom: tuple[float, float], drift: float) -> list[np.ndarray]:
    """640x480 views of ``canvas``: the window zooms in and out between ``zoom`` (fractions of the
    largest 4:3 window) and its centre drifts along a slow Lissajous path up to ``drift`` of the
    canvas from the centre (clamped to stay inside)."""
    height, width = canvas.shape[:2]
    clip = []
    for t in range(frames):
        phase = 2 * math.pi * t / frames
        w = min(width, height * 4 / 3) * (zoom[0] + (zoom[1] - zoom[0]) * (0.5 + 0.5 * math.sin(phase)))
        h = w * 3 / 4
        cx = min(max(width / 2 + drift * width * math.sin(phase), w / 2), width - w / 2)
        cy = min(max(height / 2 + drift * height * math.sin(2 * phase), h / 2), height - h / 2)
        x0, y0 = int(cx - w / 2), int(cy - h / 2)
        clip.append(cv2.resize(canvas[y0 : y0 + int(h), x0 : x0 + int(w)], SIZE, interpolation=cv2.INTER_AREA))
    return clip


def portrait_tile(image: np.ndarray, side: int, context: float = 2.0) -> np.ndarray:
    """A square tile around the photo's largest face, ``context`` times the face's size."""
    x, y, w, h = detect_faces(image)[0]
    half = int(max(w, h) * context / 2)
    cx, cy = x + w // 2, y + h // 2
    padded = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_REPLICATE)
    crop = padded[cy : cy + 2 * half, cx : cx + 2 * half]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def build_clips(photos: Path, frames: int) -> dict[str, list[np.ndarray]]:
    one = portrait_tile(cv2.imread(str(photos / ONE_FACE)), 600, context=3.0)
    tiles = [portrait_tile(cv2.imread(str(photos / name)), 300) for name in FIVE_FACES]
    canvas = np.full((600, 900, 3), 90, np.uint8)
    for i, tile in enumerate(tiles):  # three on top, two below, centred
        row, col = divmod(i, 3)
        x = col * 300 + (150 if row else 0)
        canvas[row * 300 : row * 300 + 300, x : x + 300] = tile
    return {"one face": pan_zoom(one, frames, (0.5, 1.0), 0.1),
            "five faces": pan_zoom(canvas, frames, (0.85, 1.0), 0.05)}


def classification_speed(repeats: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    results = {}
    for label, backend in (("pytorch fp32", "torch"), ("onnxruntime fp32", None), ("onnxruntime int8", "onnx")):
        if backend is None:  # the bundled checkpoint through an fp32 ONNX export
            from ferkit.infer.backends import OnnxClassifier
            from ferkit.infer.export import cached_onnx
            from ferkit.infer.models import resolve_model

            classifier = OnnxClassifier(cached_onnx(resolve_model()))
        else:
            classifier = EmotionPredictor(device="cpu", backend=backend).classifier
        row = {}
        for batch in (1, 64):
            x = rng.random((batch, 1, 48, 48), dtype=np.float32)
            for _ in range(10):
                classifier(x)
            n = 200 if batch == 1 else 20
            row[f"ms_per_face_batch{batch}"] = 1000 * timed_median(lambda x=x, c=classifier: c(x), n * repeats) / batch
        row["faces_per_s_batch64"] = 1000 / row["ms_per_face_batch64"]
        results[label] = row
        print(f"{label:17s} batch 1: {row['ms_per_face_batch1']:.2f} ms/face   batch 64: "
              f"{row['ms_per_face_batch64']:.3f} ms/face ({row['faces_per_s_batch64']:.0f} faces/s)")
    return results


def pipeline_speed(clip: list[np.ndarray], detector: str, schedule: tuple[int, float], repeats: int,
                   reference: list[list] | None) -> tuple[dict, list[list]]:
    pipeline = FacePipeline(EmotionPredictor(device="cpu"), detector, *schedule)
    boxes: list[list] = []

    def run() -> None:
        pipeline.reset()
        boxes.clear()
        for frame in clip:
            boxes.append([f.box for f in pipeline.process(frame)])

    run()  # warm-up
    seconds = timed_median(run, repeats)
    row = {"fps": len(clip) / seconds, "faces_per_frame": sum(map(len, boxes)) / len(clip)}
    if reference is not None:
        wanted = sum(map(len, reference))
        kept = sum(sum(any(iou(r, b) >= 0.3 for b in got) for r in ref) for ref, got in zip(reference, boxes,
                                                                                                strict=True))
        row["kept_of_full_detector"] = kept / max(wanted, 1)
    return row, [list(b) for b in boxes]


FER_SCRIPT = """
import json, sys, time, numpy as np
from fer.fer import FER
frames = np.load(sys.argv[1])
detector = FER(mtcnn=False)
for f in frames[:5]:
    detector.detect_emotions(f)
runs, faces = [], 0
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    faces = sum(len(detector.detect_emotions(f)) for f in frames)
    runs.append(time.perf_counter() - start)
runs.sort()
print(json.dumps({"fps": len(frames) / runs[len(runs) // 2], "faces_per_frame": faces / len(frames)}))
"""


def fer_speed(python: str, clip: list[np.ndarray], repeats: int) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.npy"
        np.save(frames, np.stack(clip))
        result = subprocess.run([python, "-c", FER_SCRIPT, str(frames), str(repeats)], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"fer could not run with {python}: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detector", nargs="+", default=["haar", "yunet"])
    parser.add_argument("--fer-python", help="a Python interpreter with the fer package installed")
    parser.add_argument("--out", default="reports/inference/inference_speed.json")
    args = parser.parse_args()

    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "classification": classification_speed(1)}
    clips = build_clips(args.photos, args.frames)
    results["pipeline"] = {}
    for clip_name, clip in clips.items():
        print(f"\n{clip_name}: {len(clip)} frames of 640x480")
        rows = results["pipeline"][clip_name] = {}
        for detector in args.detector:
            reference = None
            for schedule in SCHEDULES:
                row, boxes = pipeline_speed(clip, detector, schedule, args.repeats, reference)
                reference = reference or boxes  # the first schedule is the full detector on every frame
                label = f"{detector}, detect every {schedule[0]} at scale {schedule[1]}"
                rows[label] = row
                kept = row.get("kept_of_full_detector")
                kept = f", keeps {kept:.1%} of its faces" if kept is not None else ""
                print(f"  {label:36s} {row['fps']:6.1f} FPS, {row['faces_per_frame']:.2f} faces/frame{kept}")
        if args.fer_python:
            fer = fer_speed(args.fer_python, clip, args.repeats)
            if fer:
                rows["fer package (Haar + TFLite mini-Xception)"] = fer
                print(f"  {'fer package default pipeline':36s} {fer['fps']:6.1f} FPS, "
                      f"{fer['faces_per_frame']:.2f} faces/frame")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out} ({machine()})")


if __name__ == "__main__":
    main()
