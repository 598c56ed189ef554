"""``ferkit video``: every frame of a video through the pipeline, with tracks, a timeline and a plot.

    ferkit video interview.mp4 --out annotated.mp4 --csv timeline.csv --plot timeline.png

The timeline CSV has one row per face per frame: ``frame,time,track,x,y,w,h,emotion,<class>...``
(smoothed probabilities). It is flushed as frames are done, and the annotated video is closed
properly even when the run stops early: Ctrl-C or SIGTERM stops it between two frames, so the video
and the timeline hold the same frames. The tracks' series are kept compactly (:class:`Timeline`,
about 30 bytes a face a frame), so hours of video do not grow memory that matters.
"""

from __future__ import annotations

import csv
import json
import signal
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ferkit.apps.encode import video_writer
from ferkit.apps.media import FpsMeter, annotate, open_video, refuse_overwriting
from ferkit.infer.pipeline import FacePipeline

MIN_PLOTTED_SECONDS = 1.0  # tracks seen for less time are counted, not drawn, in the timeline plot


class Timeline:
    """Each track's (time, probabilities) series, stored as flat float arrays rather than a Python
    object per face and frame. Reads as a mapping of track id to a list of ``(time, probabilities)``."""

    def __init__(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes
        self._times: dict[int, array] = {}
        self._probs: dict[int, array] = {}

    def add(self, track: int, time_s: float, probabilities: np.ndarray) -> None:
        if track not in self._times:
            self._times[track], self._probs[track] = array("d"), array("f")
        self._times[track].append(time_s)
        self._probs[track].extend(np.asarray(probabilities, np.float32))
        self.num_classes = self.num_classes or len(probabilities)

    def __len__(self) -> int:
        return len(self._times)

    def __iter__(self):
        return iter(self._times)

    def __contains__(self, track: object) -> bool:
        return track in self._times

    def __getitem__(self, track: int) -> list[tuple[float, np.ndarray]]:
        return list(zip(*self.series(track), strict=True))

    def series(self, track: int) -> tuple[np.ndarray, np.ndarray]:
        """A track's times (T,) and probabilities (T, classes), as views of its arrays (no copy)."""
        times = np.frombuffer(self._times[track], np.float64)
        return times, np.frombuffer(self._probs[track], np.float32).reshape(-1, self.num_classes)


def _series(timeline, track: int) -> tuple[np.ndarray, np.ndarray]:
    """A track's times and probabilities from a :class:`Timeline` or a mapping of ``(time, probabilities)`` lists."""
    if isinstance(timeline, Timeline):
        return timeline.series(track)
    return np.array([t for t, _ in timeline[track]]), np.stack([p for _, p in timeline[track]])


@dataclass
class VideoResult:
    """What a run produced: frame count, speed, and each track's (time, probabilities) series."""

    frames: int = 0
    expected: int = 0  # the frame count the file declares (0: unknown)
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM; what was written is complete and playable
    seconds: float = 0.0
    fps: float = 0.0  # frames processed per second of wall-clock time
    timeline: Timeline = field(default_factory=Timeline)


def process_video(
    source: str | Path,
    pipeline: FacePipeline,
    out: str | Path | None = None,
    timeline_csv: str | Path | None = None,
    plot: str | Path | None = None,
    max_frames: int = 0,
    progress: bool = True,
    summary: str | Path | None = None,
    codec: str | None = None,
) -> VideoResult:
    """Run ``pipeline`` over every frame of ``source``; write the annotated video, the timeline CSV,
    the plot and the per-track summary (JSON, :func:`track_summary`) where asked; the video is H.264
    with the input's sound for .mp4 (``codec``: see :func:`ferkit.apps.encode.video_writer`). Raises
    ``ValueError`` for a video that cannot be read or has no frames."""
    refuse_overwriting([source], [out, timeline_csv, plot, summary])
    capture, fps, total = open_video(str(source))
    started = time.perf_counter()
    result = VideoResult(expected=total)
    # Ctrl-C and SIGTERM (a service manager, `kill`) ask the loop to stop after the frame in hand, so that every
    # file below ends on the same frame and is closed properly.
    stop = threading.Event()
    on_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)} \
        if on_main_thread else {}
    writer = table = None
    meter = FpsMeter()
    pipeline.reset()
    bar = tqdm(total=max_frames or total or None, unit="frame", disable=not progress, desc=Path(source).name)
    try:
        if timeline_csv:
            Path(timeline_csv).parent.mkdir(parents=True, exist_ok=True)
            table = open(timeline_csv, "w", newline="")  # closed in finally, flushed after every frame
            rows = csv.writer(table)
            rows.writerow(["frame", "time", "track", "x", "y", "w", "h", "emotion", *pipeline.class_names])
        while not max_frames or result.frames < max_frames:
            if stop.is_set():
                result.interrupted = True
                break
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            faces = pipeline.process(frame)
            time_s = result.frames / fps
            for face in faces:
                result.timeline.add(face.track_id, time_s, face.scores)
                if table:
                    rows.writerow([result.frames, f"{time_s:.3f}", face.track_id, *face.box, face.emotion,
                                   *(f"{p:.5f}" for p in face.scores)])
            if out:
                if writer is None:
                    writer = video_writer(out, fps, (frame.shape[1], frame.shape[0]), codec, audio_from=source)
                writer.write(annotate(frame, faces))  # the file shows faces, not how fast this machine ran
            if table:
                table.flush()
            meter.tick()
            result.frames += 1
            bar.update()
            bar.set_postfix(fps=f"{meter.fps:.1f}", faces=len(faces), refresh=False)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
        if table:
            table.close()
    if result.frames == 0 and not result.interrupted:
        raise ValueError(f"{source}: no frames could be read (empty, or an unknown codec)")
    result.seconds = time.perf_counter() - started
    result.fps = result.frames / max(result.seconds, 1e-9)
    if plot:
        plot_timeline(result.timeline, pipeline.class_names, plot, duration=result.frames / fps)
    if summary:
        Path(summary).parent.mkdir(parents=True, exist_ok=True)
        Path(summary).write_text(json.dumps(track_summary(result.timeline, pipeline.class_names, 1 / fps),
                                            indent=1) + "\n")
    return result


def track_summary(timeline: dict[int, list[tuple[float, np.ndarray]]], class_names: Sequence[str],
                  frame_seconds: float) -> list[dict]:
    """Per track, in order of first appearance: when it was seen, for how long, its dominant
    emotion and the share of its frames in each emotion (the smoothed probabilities' argmax)."""
    rows = []
    series = {t: _series(timeline, t) for t in timeline}
    for track in sorted(series, key=lambda t: series[t][0][0]):
        times, probs = series[track]
        counts = np.bincount(probs.argmax(1), minlength=len(class_names))
        rows.append({"track": track, "first_seen": round(float(times[0]), 3), "last_seen": round(float(times[-1]), 3),
                     "duration": round(float(times[-1] - times[0]) + frame_seconds, 3), "frames": len(times),
                     "dominant_emotion": class_names[int(counts.argmax())],
                     "share": {n: round(c / len(times), 4) for n, c in zip(class_names, counts, strict=True)}})
    return rows


def plot_timeline(timeline: dict[int, list[tuple[float, np.ndarray]]], class_names: Sequence[str],
                  path: str | Path, duration: float | None = None) -> None:
    """One panel per track, in order of first appearance, on a shared time axis: each class's
    probability over time. Tracks seen for less than ``MIN_PLOTTED_SECONDS`` are counted in a note
    instead of drawn; the legend sits above the panels, outside the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {t: _series(timeline, t) for t in timeline}
    ordered = sorted(series, key=lambda t: series[t][0][0])
    tracks = [t for t in ordered if series[t][0][-1] - series[t][0][0] >= MIN_PLOTTED_SECONDS]
    short = len(ordered) - len(tracks)
    fig, axes = plt.subplots(max(1, len(tracks)), 1, figsize=(10, 1.2 + 1.8 * max(1, len(tracks))), sharex=True,
                             squeeze=False)
    for ax, track in zip(axes[:, 0], tracks, strict=False):
        times, probs = series[track]
        for k, name in enumerate(class_names):
            ax.plot(times, probs[:, k], label=name, color=f"C{k}")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track #{track}")
        ax.grid(alpha=0.3)
    end = duration or max((float(series[t][0][-1]) for t in ordered), default=1.0)
    axes[-1, 0].set_xlim(0, max(end, 1e-3))
    if not tracks:
        axes[0, 0].text(0.5, 0.5, "no faces found" if not ordered else "every track was too short to draw",
                        ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel("time (s)")
    note = f"{short} short track{'s' if short != 1 else ''} (under {MIN_PLOTTED_SECONDS:g} s) not drawn" * (short > 0)
    handles = [plt.Line2D([], [], color=f"C{k}") for k in range(len(class_names))]
    fig.legend(handles, class_names, loc="upper center", ncol=len(class_names), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1 - 0.5 / fig.get_figheight()))
    if note:
        fig.text(0.01, 0.005, note, fontsize="small", color="0.3")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
