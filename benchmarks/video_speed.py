"""`ferkit video` end to end against the `fer` package, side by side on one clip.

    python benchmarks/video_speed.py --fer-python /tmp/fervenv/bin/python [--seconds 30] [--tta flip tencrop_full]

The clip: ``--seconds`` of 640x480 at 30 frames a second panning and zooming over one real face
(``inference_speed.build_clips``), written as an MJPG .avi. ferkit: ``process_video`` with the
default pipeline and detector schedule, decoding the file and writing the annotated H.264 MP4 (the
default writer since it became one browsers play), frames per second of wall-clock time, once for each
of ``--tta`` (test-time views; default: the default views). fer: its
default detector (Haar + TFLite mini-Xception) on the same decoded frames, without writing anything
(``inference_speed.FER_SCRIPT``): a peer given every advantage. Results go to
``reports/inference/video_speed.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
from common import machine
from inference_speed import DEFAULT_PHOTOS, SIZE, build_clips, fer_speed

from ferkit.apps.video import process_video
from ferkit.defaults import DEFAULT_TTA, TTA_MODES
from ferkit.infer.pipeline import FacePipeline
from ferkit.infer.predictor import EmotionPredictor

FERKIT = "ferkit video (decode, pipeline, H.264 writer)"  # the first of --tta: what the ratio to fer compares
FER = "fer package (pipeline only, no decode or writing)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--fer-python", help="a Python interpreter with the fer package installed")
    parser.add_argument("--tta", nargs="+", choices=TTA_MODES, default=[DEFAULT_TTA])
    parser.add_argument("--out", default="reports/inference/video_speed.json")
    args = parser.parse_args()
    clip = build_clips(args.photos, 30 * args.seconds)["one face"]
    record = {"command": "python benchmarks/video_speed.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "machine": machine(), "frames": len(clip),
              "size": list(SIZE)}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "clip.avi"
        writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 30, SIZE)
        for frame in clip:
            writer.write(frame)
        writer.release()
        for i, tta in enumerate(args.tta):
            pipeline = FacePipeline(EmotionPredictor(tta=tta))
            start = time.perf_counter()
            result = process_video(source, pipeline, Path(tmp) / "annotated.mp4", progress=False)
            seconds = time.perf_counter() - start
            name = FERKIT if i == 0 else f"{FERKIT}, run {i + 1}, tta {tta}"
            record[name] = {"fps": result.frames / seconds, "frames": result.frames, "tta": tta}
    if args.fer_python:
        record[FER] = fer_speed(args.fer_python, clip, 1)
    for name, r in record.items():
        if isinstance(r, dict) and r:
            print(f"{name:55s} {r['fps']:7.1f} frames/s")
    if args.fer_python and record[FER]:
        ratio = record[FERKIT]["fps"] / record[FER]["fps"]
        record["ratio"] = ratio
        print(f"ferkit / fer: {ratio:.2f}x")
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
