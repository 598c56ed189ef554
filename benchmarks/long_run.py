"""Hours, not minutes: resident memory and speed of the long-running entry points over a long run.

    python benchmarks/long_run.py detector --calls 100000 --size 160x120    # YuNet alone, ferkit's way
    python benchmarks/long_run.py detector --calls 20000 --binding wheel    # the yuface wheel's own binding
    python benchmarks/long_run.py detector --calls 2000 --binding both      # the two, call by call: speed
    python benchmarks/long_run.py video --minutes 30               # ferkit video: 30 min at 30 fps, H.264 + CSV
    python benchmarks/long_run.py webcam --frames 50000            # ferkit webcam's loop (headless: printed)
    python benchmarks/long_run.py live --frames 20000              # one live WebSocket session's work
    python benchmarks/long_run.py webcam --frames 100000 --detect-every 1   # 100,000 detections in the loop
    ... --quick                                                    # short defaults, for a check in minutes

Each entry point is driven with a looped synthetic clip: the bundled example photo, its face drifting
across a 640x480 frame, so that detection, tracking and classification all do real work. ``video``
and ``webcam`` run their real loops (``process_video``, ``run_camera``) on a capture that loops the
clip; ``live`` feeds JPEG frames to a live session as the WebSocket does. Every ``--every`` frames
(or calls) the process's resident memory and the frames per second since the last sample are
recorded; the JSON has every sample, the growth from the first ``--baseline`` calls to the end, and the
speed at the start and the end, and how many times the detector ran; ``--plot`` draws memory and speed
over the run. ``--detect-every`` changes how often the pipelines detect (theirs: every third frame), so
that as many detections take fewer frames; ``--size`` the clip's frame size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np
from common import machine, rss_kib

from ferkit.infer.models import resolve_model

EXAMPLE = Path(__file__).parents[1] / "src" / "ferkit" / "examples" / "obama.jpg"
QUICK = {"detector": 5000, "video": 2.0, "webcam": 3000, "live": 1500}
FULL = {"detector": 100_000, "video": 30.0, "webcam": 54_000, "live": 20_000}


def clip(frames: int = 120, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """A short loop: the example face, scaled to a third of the frame's height, drifting left and right."""
    width, height = size
    face = cv2.imread(str(EXAMPLE))
    face = cv2.resize(face, None, fx=height / 2.5 / face.shape[0], fy=height / 2.5 / face.shape[0])
    span = width - face.shape[1]
    loop = []
    for i in range(frames):
        frame = np.full((height, width, 3), 90, np.uint8)
        x = int(span * (0.5 + 0.4 * np.sin(2 * np.pi * i / frames)))
        y = (height - face.shape[0]) // 2
        frame[y : y + face.shape[0], x : x + face.shape[1]] = face
        loop.append(frame)
    return loop


class Recorder:
    """Resident memory and speed every ``every`` ticks."""

    def __init__(self, every: int) -> None:
        self.every, self.count, self.samples = every, 0, []
        self.last = self.start = time.perf_counter()

    def tick(self) -> None:
        self.count += 1
        if self.count % self.every == 0:
            now = time.perf_counter()
            self.samples.append({"count": self.count, "seconds": round(now - self.start, 2),
                                 "rss_mib": round(rss_kib() / 1024, 2),
                                 "per_second": round(self.every / (now - self.last), 2)})
            self.last = now


class LoopedCapture:
    """A cv2.VideoCapture stand-in that plays ``frames`` in a loop, ``total`` frames in all."""

    def __init__(self, frames: list[np.ndarray], total: int, recorder: Recorder) -> None:
        self.frames, self.total, self.recorder, self.read_count = frames, total, recorder, 0

    def read(self):
        if self.read_count >= self.total:
            return False, None
        if self.read_count:
            self.recorder.tick()  # one tick per frame done
        frame = self.frames[self.read_count % len(self.frames)]
        self.read_count += 1
        return True, frame.copy()

    def release(self) -> None:
        pass


def run_detector(calls: int, recorder: Recorder, binding: str, size: tuple[int, int]) -> dict[str, float]:
    """``calls`` detections; with ``both``, the two bindings alternate on the same frames, and the
    median milliseconds a call of each is returned."""
    import yuface

    from ferkit.infer.detection import LibFaceDetection

    frames = clip(size=size)
    ours = LibFaceDetection()
    order = {"wheel": [yuface.c_detect], "ferkit": [ours], "both": [ours, yuface.c_detect]}[binding]
    times: list[list[float]] = [[] for _ in order]
    for i in range(calls):
        k = i % len(order)
        start = time.perf_counter()
        order[k](frames[(i // len(order)) % len(frames)])
        times[k].append(time.perf_counter() - start)
        recorder.tick()
    names = {"wheel": ["wheel"], "ferkit": ["ferkit"], "both": ["ferkit", "wheel"]}[binding]
    return {f"{name}_ms_median": round(1000 * float(np.median(ts)), 3) for name, ts in zip(names, times, strict=True)}


def pipeline_of(args):
    from ferkit.infer.pipeline import FacePipeline
    from ferkit.infer.predictor import EmotionPredictor

    pipeline = FacePipeline(EmotionPredictor(resolve_model(args.model), device="cpu"))
    return counted(pipeline, args)


def counted(pipeline, args):
    """``pipeline`` with ``args.detect_every`` (if given) and its detector's calls counted in ``args.detections``."""
    if args.detect_every:
        pipeline.detect_every = args.detect_every
    detect, args.detections = pipeline.detector.detect, 0

    def detect_counted(*a, **k):
        args.detections += 1
        return detect(*a, **k)

    pipeline.detector.detect = detect_counted
    return pipeline


def run_video(frames: int, recorder: Recorder, args) -> None:
    import ferkit.apps.video as video

    capture = LoopedCapture(clip(size=args.frame_size), frames, recorder)
    video.open_video = lambda source: (capture, 30.0, frames)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "looped.avi"
        source.write_bytes(b"")  # a name for the run; the frames come from the looped capture
        video.process_video(source, pipeline_of(args), Path(tmp) / "out.mp4", Path(tmp) / "timeline.csv",
                            progress=False)
        args.written_mib = round((Path(tmp) / "out.mp4").stat().st_size / 2**20, 1)


def run_webcam(frames: int, recorder: Recorder, args) -> None:
    import ferkit.apps.camera as camera

    capture = LoopedCapture(clip(size=args.frame_size), frames, recorder)
    camera.open_video = lambda source: (capture, 30.0, 0)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        camera.run_camera("0", pipeline_of(args), max_frames=frames)  # headless: a line printed per frame


def run_live(frames: int, recorder: Recorder, args) -> None:
    from ferkit.serve.config import ServiceConfig
    from ferkit.serve.live import LiveSessions

    sessions = LiveSessions(ServiceConfig(model=args.model, device="cpu"), None, "long-run")
    _, session = sessions.start()
    counted(session.pipeline, args)
    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in clip(size=args.frame_size)]
    for i in range(frames):
        session.process(jpegs[i % len(jpegs)])
        recorder.tick()


def schedule(detect_every: int | None) -> str:
    """Which frames the detector runs on, in words."""
    return {None: "every third frame", 1: "every frame"}.get(detect_every, f"one frame in {detect_every}")


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [s["count"] for s in record["samples"]]
    fig, (mem, speed) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    mem.plot(counts, [s["rss_mib"] for s in record["samples"]])
    mem.set_ylabel("resident MiB")
    mem.ticklabel_format(axis="y", useOffset=False)
    speed.plot(counts, [s["per_second"] for s in record["samples"]])
    speed.set_ylabel(f"{record['unit']} per second")
    speed.set_xlabel(record["unit"])
    mem.set_title(record["title"], fontsize="medium")
    for ax in (mem, speed):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entry", choices=("detector", "video", "webcam", "live"))
    parser.add_argument("--calls", type=int, help="detector: detections (default: 100,000; --quick 5,000)")
    parser.add_argument("--minutes", type=float, help="video: minutes at 30 fps (default: 30; --quick 2)")
    parser.add_argument("--frames", type=int, help="webcam, live: frames (default: 54,000 / 20,000; --quick "
                        "3,000 / 1,500)")
    parser.add_argument("--quick", action="store_true", help="short defaults")
    parser.add_argument("--binding", choices=("ferkit", "wheel", "both"), default="ferkit",
                        help="detector: ferkit's call of libfacedetection, the yuface wheel's binding, or both "
                        "alternating (for speed side by side)")
    parser.add_argument("--size", default="640x480", help="the clip's frame size (the leak it looks for was the same "
                        "per call at any size; default: 640x480)")
    parser.add_argument("--detect-every", type=int, help="video, webcam, live: detect on every N-th frame (default: "
                        "the pipeline's own)")
    parser.add_argument("--model", default="fast")
    parser.add_argument("--every", type=int, help="sample every N calls or frames (default: a hundredth of the run)")
    parser.add_argument("--baseline", type=int, default=1000, help="growth is measured from this sample on")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    args.frame_size = tuple(map(int, args.size.split("x")))
    defaults = QUICK if args.quick else FULL
    if args.entry == "detector":
        count, unit = args.calls or defaults["detector"], "detections"
    elif args.entry == "video":
        count, unit = int(30 * 60 * (args.minutes or defaults["video"])), "frames"
    else:
        count, unit = args.frames or defaults[args.entry], "frames"
    recorder = Recorder(args.every or max(1, count // 100))
    per_call = {}
    if args.entry == "detector":
        per_call = run_detector(count, recorder, args.binding, args.frame_size)
    else:
        {"video": run_video, "webcam": run_webcam, "live": run_live}[args.entry](count, recorder, args)
    samples = recorder.samples
    base = next((s for s in samples if s["count"] >= args.baseline), samples[0])
    tenth = max(1, len(samples) // 10)
    start_speed = float(np.median([s["per_second"] for s in samples[:tenth]]))
    end_speed = float(np.median([s["per_second"] for s in samples[-tenth:]]))
    what = f"{args.entry}" + (f" ({args.binding} binding, {args.size})" if args.entry == "detector" else
                              f" ({args.size}, detecting on {schedule(args.detect_every)})")
    record = {
        "command": "python benchmarks/long_run.py " + " ".join(sys.argv[1:]), "date": date.today().isoformat(),
        "machine": machine(), "entry": args.entry, "binding": args.binding if args.entry == "detector" else None,
        "unit": unit, "count": count, "baseline": base,
        "growth_mib": round(samples[-1]["rss_mib"] - base["rss_mib"], 2),
        "speed_start": round(start_speed, 2), "speed_end": round(end_speed, 2),
        "speed_end_vs_start": round(end_speed / start_speed, 3), "samples": samples,
        "title": f"{what}: {count:,} {unit}", "written_mib": getattr(args, "written_mib", None),
        "detections": count if args.entry == "detector" else args.detections, **per_call,
    }
    print(f"{record['title']}: resident {base['rss_mib']:.1f} MiB after {base['count']:,} -> "
          f"{samples[-1]['rss_mib']:.1f} MiB at the end ({record['growth_mib']:+.1f} MiB); {unit} per second "
          f"{start_speed:.1f} at the start, {end_speed:.1f} at the end ({record['speed_end_vs_start']:.2f}x); "
          f"{record['detections']:,} detections"
          + "".join(f"; {k.removesuffix('_ms_median')} {v:.2f} ms a call (median)" for k, v in per_call.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    if args.plot:
        plot(record, args.plot)


if __name__ == "__main__":
    main()
