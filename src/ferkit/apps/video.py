"""``ferkit video``: every frame of a video through the pipeline, with tracks, a timeline and a plot.

    ferkit video interview.mp4 --out annotated.mp4 --csv timeline.csv --plot timeline.png

The timeline CSV has one row per face per frame: ``frame,time,track,x,y,w,h,emotion,<class>...``
(smoothed probabilities). It is flushed as frames are done, and the annotated video is closed
properly even when the run stops early, so an interrupted run keeps what it wrote.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ferkit.apps.media import FpsMeter, annotate, open_video, refuse_overwriting, video_writer
from ferkit.infer.pipeline import FacePipeline

MAX_PLOTTED_TRACKS = 6


@dataclass
class VideoResult:
    """What a run produced: frame count, speed, and each track's (time, probabilities) series."""

    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0  # frames processed per second of wall-clock time
    timeline: dict[int, list[tuple[float, np.ndarray]]] = field(default_factory=lambda: defaultdict(list))


def process_video(
    source: str | Path,
    pipeline: FacePipeline,
    out: str | Path | None = None,
    timeline_csv: str | Path | None = None,
    plot: str | Path | None = None,
    max_frames: int = 0,
    progress: bool = True,
) -> VideoResult:
    """Run ``pipeline`` over every frame of ``source``; write the annotated video, the timeline CSV
    and the plot where asked. Raises ``ValueError`` for a video that cannot be read or has no frames."""
    refuse_overwriting([source], [out, timeline_csv, plot])
    capture, fps, total = open_video(str(source))
    result = VideoResult()
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
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            faces = pipeline.process(frame)
            time_s = result.frames / fps
            for face in faces:
                result.timeline[face.track_id].append((time_s, face.scores))
                if table:
                    rows.writerow([result.frames, f"{time_s:.3f}", face.track_id, *face.box, face.emotion,
                                   *(f"{p:.5f}" for p in face.scores)])
            if out:
                if writer is None:
                    writer = video_writer(out, fps, (frame.shape[1], frame.shape[0]))
                writer.write(annotate(frame, faces, meter.fps if meter.frames else None))
            if table:
                table.flush()
            meter.tick()
            result.frames += 1
            bar.update()
            bar.set_postfix(fps=f"{meter.fps:.1f}", faces=len(faces), refresh=False)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
        if table:
            table.close()
    if result.frames == 0:
        raise ValueError(f"{source}: no frames could be read (empty, or an unknown codec)")
    result.seconds = bar.format_dict["elapsed"]
    result.fps = result.frames / max(result.seconds, 1e-9)
    if plot:
        plot_timeline(result.timeline, pipeline.class_names, plot)
    return result


def plot_timeline(timeline: dict[int, list[tuple[float, np.ndarray]]], class_names: Sequence[str],
                  path: str | Path) -> None:
    """One panel per track (the longest few): each class's probability over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = sorted(timeline, key=lambda t: -len(timeline[t]))[:MAX_PLOTTED_TRACKS]
    fig, axes = plt.subplots(max(1, len(tracks)), 1, figsize=(10, 2.2 * max(1, len(tracks))), sharex=True,
                             squeeze=False)
    for ax, track in zip(axes[:, 0], tracks, strict=False):
        times = [t for t, _ in timeline[track]]
        probs = np.stack([p for _, p in timeline[track]])
        for k, name in enumerate(class_names):
            ax.plot(times, probs[:, k], label=name)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track #{track}")
        ax.grid(alpha=0.3)
    if tracks:
        axes[0, 0].legend(loc="upper right", ncol=len(class_names), fontsize="small")
    else:
        axes[0, 0].text(0.5, 0.5, "no faces found", ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
