"""Shared fixtures: small synthetic FER2013 files, a private data cache, tiny checkpoints."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from ferkit.checkpoint import make_checkpoint, save_atomic
from ferkit.model import create_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_CSV = SHARED / "data" / "fer2013.csv.gz"
REAL_PHOTOS = SHARED / "photos"
needs_real_data = pytest.mark.skipif(not REAL_CSV.is_file(), reason=f"real FER2013 not found at {REAL_CSV}")

SPLIT_SIZES = {"Training": 96, "PublicTest": 32, "PrivateTest": 32}


def synthetic_rows(sizes: dict[str, int] = SPLIT_SIZES, seed: int = 0) -> list[str]:
    """CSV lines (header first): labels cycle 0-6; each class has its own brightness pattern."""
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    i = 0
    for usage, n in sizes.items():
        for _ in range(n):
            label = i % 7
            img = rng.integers(0, 60, size=(48, 48)) + 25 * label
            img[label * 6 : label * 6 + 6, :] = 255  # a class-specific bright band
            lines.append(f"{label},{' '.join(map(str, img.clip(0, 255).ravel()))},{usage}")
            i += 1
    return lines


def write_csv(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def train_interrupted(cfg, monkeypatch, epoch: int) -> None:
    """Train ``cfg`` until the machine goes away in the middle of ``epoch`` (a KeyboardInterrupt in
    its training pass), as a resumed run must survive."""
    from ferkit.train import loop as train_module

    real_epoch = train_module.train_one_epoch
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(train_module, "train_one_epoch", crash)
        train_module.train(cfg)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own empty data cache, never the user's."""
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def fer_csv(tmp_path, monkeypatch) -> Path:
    """A small synthetic FER2013 file; FER+'s votes (for recipes and options that use them) become
    :func:`ferplus_lines`, which describe its rows as the real FER+ file describes the real ones."""
    from ferkit import data as data_module

    monkeypatch.setattr(data_module, "FERPLUS_VOTES", write_csv(tmp_path / "fer2013new.csv", ferplus_lines()))
    return write_csv(tmp_path / "fer2013.csv", synthetic_rows())


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A 4-class checkpoint with random weights (fast; predictions are meaningless)."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random4.pth"
    save_atomic(make_checkpoint(create_model(4), epoch=0, val_accuracy=0.0, config={"recipe": "test"}), path)
    return path


@pytest.fixture(scope="session")
def face_image() -> np.ndarray:
    """A synthetic 640x480 scene with one real face: the bundled public-domain astronaut portrait,
    shrunk and pasted onto a noise background."""
    import cv2

    from ferkit.apps.media import EXAMPLES_DIR

    portrait = cv2.imread(str(EXAMPLES_DIR / "astronaut.png"))
    face = cv2.resize(portrait[20:260, 120:330], (210, 240))
    scene = np.random.default_rng(0).integers(90, 140, size=(480, 640, 3)).astype(np.uint8)
    scene[120:360, 215:425] = face
    return scene


FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
# FER+'s vote columns (after Usage and Image name) for each FER2013 label 0-6
FERPLUS_COLUMN_OF_LABEL = (4, 5, 6, 1, 3, 2, 0)


def ferplus_lines(sizes: dict[str, int] = SPLIT_SIZES) -> list[str]:
    """FER+ votes for :func:`synthetic_rows`: 7 for each row's label, 3 for neutral; row 1 dropped."""
    lines = [FERPLUS_HEADER]
    i = 0
    for usage, n in sizes.items():
        for _ in range(n):
            votes = [0] * 10
            if i != 1:
                votes[FERPLUS_COLUMN_OF_LABEL[i % 7]] += 7
                votes[0] += 3
            lines.append(f"{usage},{'' if i == 1 else f'fer{i:07d}.png'},{','.join(map(str, votes))}")
            i += 1
    return lines


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width`` x ``height`` pixels (a decompression bomb's
    header: whoever trusts it before checking asks for gigabytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
            + chunk(b"IEND", b""))


def clip_with_tone(path: Path, frames: list[np.ndarray], fps: int = 10, audio_codec: str = "aac") -> Path:
    """A video of ``frames`` (H.264) with a 440 Hz tone as long as it (``audio_codec``: aac, or
    pcm_s16le in a .mkv), written with PyAV."""
    import av

    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    audio = container.add_stream(audio_codec, rate=44100)
    for frame in frames:
        for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    samples = 44100 * len(frames) // fps
    tone = np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)
    pcm = audio_codec.startswith("pcm")
    for start in range(0, samples, 1024):
        chunk = tone[None, start : start + 1024]
        chunk = (chunk * 8000).astype(np.int16) if pcm else (0.3 * chunk).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16" if pcm else "fltp", layout="mono")
        frame.rate, frame.pts = 44100, start
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode(None):
        container.mux(packet)
    container.close()
    return path
