"""Writing videos people can play: H.264 in MP4 through PyAV (FFmpeg inside its wheel), with the
input's sound; OpenCV's own writers for other choices.

    writer = video_writer("out.mp4", fps, (width, height), audio_from="in.mp4")   # H.264 + the input's audio
    writer.write(frame_bgr) ...
    writer.release()                                                              # flushes, copies the audio

Browsers play H.264 MP4; OpenCV's ``mp4v`` (MPEG-4 Part 2) they do not.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

CODECS = ("h264", "mp4v", "mjpg")
DEFAULT_CODEC = {".mp4": "h264", ".m4v": "h264", ".mov": "h264", ".mkv": "h264", ".avi": "mjpg"}
COPIED_AUDIO = ("aac", "mp3")  # audio codecs an MP4 takes as they are; others are re-encoded to AAC


class H264Writer:
    """H.264 (yuv420p, what every browser plays) through PyAV, at the input's frame rate, with the
    audio of ``audio_from`` (if it has any) copied or, where MP4 cannot hold it, re-encoded to AAC."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], audio_from: str | Path | None = None) -> None:
        import av

        self.container = av.open(str(path), "w")
        self.size = size
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height = (v + v % 2 for v in size)  # yuv420p needs even sides
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"preset": "veryfast", "crf": "23"}  # x264's default preset costs 2-3x the time
        self.source, self.audio_in, self.audio_out, self.resampler = None, None, None, None
        if audio_from is not None:
            self._add_audio(av, audio_from)

    def _add_audio(self, av, audio_from: str | Path) -> None:
        try:
            self.source = av.open(str(audio_from))
        except av.error.FFmpegError:  # OpenCV read it, FFmpeg does not: no sound, the video still gets written
            return
        self.audio_in = next(iter(self.source.streams.audio), None)
        if self.audio_in is None:
            return
        if self.audio_in.codec_context.name in COPIED_AUDIO:
            self.audio_out = self.container.add_stream_from_template(self.audio_in)
        else:
            self.audio_out = self.container.add_stream("aac", rate=self.audio_in.rate)
            self.resampler = av.AudioResampler(format="fltp", layout=self.audio_in.layout, rate=self.audio_in.rate)

    def write(self, frame: np.ndarray) -> None:
        import av

        if frame.shape[1] % 2 or frame.shape[0] % 2:
            frame = cv2.copyMakeBorder(frame, 0, frame.shape[0] % 2, 0, frame.shape[1] % 2, cv2.BORDER_REPLICATE)
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")):
            self.container.mux(packet)

    def release(self) -> None:
        """Flush the encoder, add the sound, close the file (it is playable from here on)."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        if self.audio_out is not None:
            self._copy_audio()
        self.container.close()
        if self.source is not None:
            self.source.close()

    def _copy_audio(self) -> None:
        for packet in self.source.demux(self.audio_in):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            if self.resampler is None:
                packet.stream = self.audio_out
                self.container.mux(packet)
                continue
            for frame in packet.decode():
                for resampled in self.resampler.resample(frame):
                    self.container.mux(self.audio_out.encode(resampled))
        if self.resampler is not None:
            self.container.mux(self.audio_out.encode(None))


def video_writer(path: str | Path, fps: float, size: tuple[int, int], codec: str | None = None,
                 audio_from: str | Path | None = None):
    """A writer (``write(frame_bgr)``, ``release()``) for ``path``: ``codec`` ``h264`` (the default
    for .mp4, .m4v, .mov and .mkv; with ``audio_from``'s sound), or OpenCV's ``mp4v`` or ``mjpg``
    (the default for .avi; no sound)."""
    path = Path(path)
    codec = codec or DEFAULT_CODEC.get(path.suffix.lower())
    if path.suffix.lower() not in DEFAULT_CODEC:
        raise ValueError(f"{path}: unsupported video type; use one of {sorted(DEFAULT_CODEC)}")
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
    if codec == "h264" and path.suffix.lower() == ".avi":
        raise ValueError(f"{path}: H.264 goes into .mp4, .m4v, .mov or .mkv; use --codec mjpg for .avi")
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "h264":
        return H264Writer(path, fps, size, audio_from)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec.upper() if codec == "mjpg" else codec),
                             fps, size)
    if not writer.isOpened():
        raise ValueError(f"{path}: cannot write a video there")
    return writer
