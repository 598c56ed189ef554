"""FER2013: parse and validate the CSV once, cache the arrays, split by Usage, serve batches.

The Kaggle ``fer2013.csv`` has a header ``emotion,pixels,Usage`` and one 48x48 grayscale face per
row as 2304 space-separated integers. Parsing it naively takes ~20 s, so :func:`load_fer2013`
validates rows with bytes operations, converts all pixels in one vectorized pass and keeps the
result in a compressed cache keyed by the source file, making every later load well under a second.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.defaults import LABEL_SETS

IMAGE_SIZE = 48
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
EMOTIONS_7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EMOTIONS_4 = ("angry", "sad", "happy", "neutral")
EMOTIONS_8 = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")  # FER+'s task
# FER2013 label -> 4-class label: angry+disgust, fear+sad, happy, surprise+neutral.
MAP_7_TO_4 = (0, 0, 1, 2, 1, 3, 3)
MAP_7_TO_8 = (4, 5, 6, 1, 3, 2, 0)  # FER2013 label -> FER+'s class (contempt has no FER2013 label)
USAGES = ("Training", "PublicTest", "PrivateTest")
SPLIT_ALIASES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
CACHE_VERSION = 2
# FER+ (Barsoum et al. 2016): ten annotators' votes for every row of the original fer2013.csv.
FERPLUS_VOTES = Path(__file__).parent / "labels" / "fer2013new.csv.gz"
# Its vote columns in FER2013's label order (contempt, unknown and not-a-face have no FER2013 label).
FERPLUS_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
FERPLUS_ALL_COLUMNS = (*EMOTIONS_8, "unknown", "NF")  # every vote column, in the file's order
TOO_MANY_DIGITS = np.iinfo(np.int16).max  # marks a pixel value of four digits or more
MAX_LINE_BYTES = 64 << 10  # a FER2013 row is under 10 KB; longer lines are bad rows, never held


class DataError(ValueError):
    """A data file that cannot be used: missing, unreadable, or holding invalid rows."""


@dataclass(frozen=True)
class BadRow:
    line: int  # 1-based line number in the CSV (the header is line 1)
    reason: str


@dataclass
class Fer2013Arrays:
    """The whole dataset as arrays: ``pixels`` (N, 48, 48) uint8, ``emotion`` (N,) int64 in 0-6,
    ``usage`` (N,) int8 indexing :data:`USAGES`, and the rows that were skipped."""

    pixels: np.ndarray
    emotion: np.ndarray
    usage: np.ndarray
    bad_rows: tuple[BadRow, ...] = ()

    def rows(self, name: str) -> np.ndarray:
        """A boolean mask of one Usage split's rows (``Training``/``train``, ``PublicTest``/``val``...)."""
        usage = SPLIT_ALIASES.get(name, name)
        if usage not in USAGES:
            raise ValueError(f"unknown split {name!r}; expected one of {USAGES} or {tuple(SPLIT_ALIASES)}")
        return self.usage == USAGES.index(usage)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Pixels and 7-class labels of one Usage split (``Training``/``train``, ``PublicTest``/``val``...)."""
        mask = self.rows(name)
        return self.pixels[mask], self.emotion[mask]


def class_names(num_classes: int) -> tuple[str, ...]:
    """Class names of the 4-class (merged), 7-class (FER2013's) or 8-class (FER+'s) task."""
    names = {4: EMOTIONS_4, 7: EMOTIONS_7, 8: EMOTIONS_8}.get(num_classes)
    if names is None:
        raise ValueError(f"num_classes must be 4, 7 or 8, got {num_classes}")
    return names


def class_mapping(num_classes: int) -> list[int]:
    """For each FER2013 label 0-6, the class index in the chosen task."""
    class_names(num_classes)
    return list({4: MAP_7_TO_4, 7: range(7), 8: MAP_7_TO_8}[num_classes])


def map_labels(emotion: np.ndarray, num_classes: int) -> np.ndarray:
    """Map FER2013 labels (0-6) to the chosen task's labels."""
    return np.asarray(class_mapping(num_classes), dtype=np.int64)[emotion]


def merge_columns(per_label: np.ndarray, num_classes: int) -> np.ndarray:
    """Values over FER2013's seven labels (..., 7), such as votes or probabilities, summed into the
    chosen task's classes (..., num_classes)."""
    return per_label @ np.eye(num_classes, dtype=np.float32)[class_mapping(num_classes)]


# ----------------------------------------------------------------------------------------------
# Parsing


def _csv_lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, line without its end)`` of a plain or gzipped file, read as a stream; a line
    longer than :data:`MAX_LINE_BYTES` comes as ``None`` and is skipped without ever being held, so
    a huge file with no newline costs no more memory than a small one."""
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with gzip.open(raw, "rb") if gz else raw as f:
                for line_no, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
                    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                        while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                            pass  # drain the rest of the overlong line, keeping none of it
                        yield line_no, None
                    else:
                        yield line_no, line.rstrip(b"\r\n")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _parse_pixel_values(pixel_fields: Sequence[bytes], chunk_rows: int = 1000) -> np.ndarray:
    """Convert validated pixel strings (digits and single spaces) to int16 values, vectorized."""
    out = np.empty((len(pixel_fields), NUM_PIXELS), dtype=np.int16)
    for start in range(0, len(pixel_fields), chunk_rows):
        chunk = pixel_fields[start : start + chunk_rows]
        buf = np.frombuffer(b" ".join(chunk) + b" ", dtype=np.uint8)
        ends = np.flatnonzero(buf == 32)  # one space after every number
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        length = ends - starts
        digits = buf.astype(np.int16) - 48
        value = digits[ends - 1]
        for k, scale in ((2, 10), (3, 100)):
            m = length >= k
            value[m] += scale * digits[ends[m] - k]
        value[length > 3] = TOO_MANY_DIGITS  # beyond 999: out of range whatever the digits
        out[start : start + len(chunk)] = value.reshape(len(chunk), NUM_PIXELS)
    return out


def parse_fer2013_csv(path: str | os.PathLike, skip_bad_rows: bool = False) -> Fer2013Arrays:
    """Parse and validate ``fer2013.csv`` or ``fer2013.csv.gz`` (no cache).

    Every row is checked: three columns, a label in 0-6, a known Usage, exactly 2304 integer pixels
    in 0-255. A bad row raises :class:`DataError` with its line number and reason (all bad rows are
    listed, up to 20), unless ``skip_bad_rows`` is set, in which case they are dropped and returned
    in ``bad_rows``.
    """
    path = Path(path)
    lines = _csv_lines(path)
    _, first = next(lines, (1, b""))
    if first is None:
        raise DataError(f"{path}: line 1 is longer than {MAX_LINE_BYTES} bytes: not a FER2013 CSV header")
    header = [h.strip().decode("utf-8", "replace") for h in first.split(b",")]
    shown = repr(",".join(header)[:100])  # the header as errors quote it, cut short
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
    if missing:
        raise DataError(f"{path}: line 1: header {shown} lacks column(s) {missing}")
    col_emotion, col_pixels, col_usage = (header.index(c) for c in ("emotion", "pixels", "Usage"))
    n_cols = len(header)
    usage_index = {u.encode(): i for i, u in enumerate(USAGES)}
    emotion_ok = {str(i).encode(): i for i in range(7)}

    bad: list[BadRow] = []
    pixel_fields: list[bytes] = []
    lines_kept: list[int] = []
    emotion: list[int] = []
    usage: list[int] = []
    for line_no, line in lines:
        if line is None:
            bad.append(BadRow(line_no, f"longer than {MAX_LINE_BYTES} bytes (a FER2013 row is under 10 KB)"))
            continue
        if not line.strip():
            continue
        fields = line.split(b",")
        if len(fields) != n_cols:
            bad.append(BadRow(line_no, f"expected {n_cols} columns ({shown}), found {len(fields)}"))
            continue
        label = emotion_ok.get(fields[col_emotion].strip())
        if label is None:
            bad.append(BadRow(line_no, f"emotion label {fields[col_emotion][:20]!r} is not an integer 0-6"))
            continue
        use = usage_index.get(fields[col_usage].strip())
        if use is None:
            bad.append(BadRow(line_no, f"unknown Usage {fields[col_usage][:30]!r}; expected one of {USAGES}"))
            continue
        pixels = fields[col_pixels].strip()
        if pixels.translate(None, b"0123456789 ") or b"  " in pixels:
            junk = pixels.translate(None, b"0123456789 ")[:10]
            what = f"characters {junk!r}" if junk else "repeated spaces"
            bad.append(BadRow(line_no, f"pixels must be integers 0-255 separated by single spaces; found {what}"))
            continue
        count = pixels.count(b" ") + 1 if pixels else 0
        if count != NUM_PIXELS:
            bad.append(BadRow(line_no, f"expected {NUM_PIXELS} pixel values, found {count}"))
            continue
        pixel_fields.append(pixels)
        lines_kept.append(line_no)
        emotion.append(label)
        usage.append(use)

    values = _parse_pixel_values(pixel_fields) if pixel_fields else np.empty((0, NUM_PIXELS), np.int16)
    out_of_range = np.flatnonzero((values > 255).any(axis=1))
    for i in out_of_range:
        v = int(values[i][values[i] > 255][0])
        shown = "with more than 3 digits" if v == TOO_MANY_DIGITS else str(v)
        bad.append(BadRow(lines_kept[i], f"pixel value {shown} outside 0-255"))
    bad.sort(key=lambda b: b.line)
    if bad and not skip_bad_rows:
        listing = "\n".join(f"  line {b.line}: {b.reason}" for b in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DataError(
            f"{path}: {len(bad)} bad row(s) (use --skip-bad-rows to drop them):\n{listing}{more}"
        )
    keep = np.ones(len(values), dtype=bool)
    keep[out_of_range] = False
    if not keep.any():
        raise DataError(f"{path}: no valid rows")
    return Fer2013Arrays(
        pixels=values[keep].astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
        emotion=np.asarray(emotion, dtype=np.int64)[keep],
        usage=np.asarray(usage, dtype=np.int8)[keep],
        bad_rows=tuple(bad),
    )


def load_ferplus_votes(arrays: Fer2013Arrays, path: str | os.PathLike | None = None,
                       columns: Sequence[str] = FERPLUS_COLUMNS) -> np.ndarray:
    """FER+'s annotator votes for every row of ``arrays``: (N, len(columns)) counts, by default over
    FER2013's labels in their order (:data:`FERPLUS_ALL_COLUMNS`: all ten, in the file's order).

    FER+ (``path``, default: the copy shipped in ``ferkit/labels``) describes the original
    ``fer2013.csv`` row by row, so ``arrays`` must hold every row of it in order; the Usage of each
    row is checked. Rows FER+ dropped have no votes (all zero).
    """
    import csv

    path = Path(path or FERPLUS_VOTES)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read FER+ votes ({e})") from None
    header = rows[0] if rows else []
    missing = [c for c in ("Usage", *columns) if c not in header]
    if missing:
        raise DataError(f"{path}: line 1: not a FER+ fer2013new.csv, it lacks column(s) {missing}")
    rows = [r for r in rows[1:] if r]
    if len(rows) != len(arrays.usage):
        raise DataError(f"{path}: FER+ votes for {len(rows)} rows, but the data has {len(arrays.usage)} rows"
                        f"{f' ({len(arrays.bad_rows)} bad rows skipped)' if arrays.bad_rows else ''}: FER+ "
                        "labels the original fer2013.csv row by row, so every row must be there, in order")
    col_usage, col_votes = header.index("Usage"), [header.index(c) for c in columns]
    usage_index = {u: i for i, u in enumerate(USAGES)}
    votes = np.zeros((len(rows), len(columns)), dtype=np.float32)
    for i, row in enumerate(rows):
        if usage_index.get(row[col_usage]) != arrays.usage[i]:
            raise DataError(f"{path}: line {i + 2}: Usage {row[col_usage]!r} differs from the data's "
                            f"{USAGES[arrays.usage[i]]!r}: these votes belong to another file or row order")
        try:
            votes[i] = [float(row[c] or 0) for c in col_votes]
        except (ValueError, IndexError):
            raise DataError(f"{path}: line {i + 2}: vote counts must be numbers, got {row}") from None
    return votes


def ferplus_labels(arrays: Fer2013Arrays, num_classes: int, path: str | os.PathLike | None = None) -> np.ndarray:
    """FER+'s majority label of every row of ``arrays`` in the task's classes, -1 where there is none:
    rows FER+ dropped, ties for the most votes, and majorities for unknown, not-a-face or (except
    in FER+'s own 8-class task) contempt."""
    votes = load_ferplus_votes(arrays, path, FERPLUS_ALL_COLUMNS)
    winner = votes.argmax(1)
    tie = (votes == votes.max(1, keepdims=True)).sum(1) > 1
    # FER+ column -> class: its 8 emotions through FER2013's labels (or as they are for 8 classes)
    to_fer2013 = [MAP_7_TO_8.index(c) if c in MAP_7_TO_8 else -1 for c in range(len(FERPLUS_ALL_COLUMNS))]
    if num_classes == 8:
        column_class = [c if c < 8 else -1 for c in range(len(FERPLUS_ALL_COLUMNS))]
    else:
        mapping = class_mapping(num_classes)
        column_class = [mapping[f] if f >= 0 else -1 for f in to_fer2013]
    labels = np.asarray(column_class, dtype=np.int64)[winner]
    labels[tie | (votes.sum(1) == 0)] = -1
    return labels


def split_labels(arrays: Fer2013Arrays, split: str, num_classes: int, labels: str = "fer2013") -> np.ndarray:
    """One split's labels in the task's classes from a label set: FER2013's own, or FER+'s majority
    (-1 marks a row without one; see :func:`ferplus_labels`)."""
    if labels == "ferplus":
        return ferplus_labels(arrays, num_classes)[arrays.rows(split)]
    if labels != "fer2013":
        raise ValueError(f"unknown label set {labels!r}; expected one of {LABEL_SETS}")
    return map_labels(arrays.split(split)[1], num_classes)


# ----------------------------------------------------------------------------------------------
# Cache


def cache_dir() -> Path:
    """Where parsed arrays are cached: ``$FERKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ferkit``,
    else ``~/.cache/ferkit``."""
    if os.environ.get("FERKIT_CACHE_DIR"):
        return Path(os.environ["FERKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ferkit"


def _cache_key(path: Path, skip_bad_rows: bool) -> str:
    """A hash of the file's whole content (0.1 s for the 94 MB fer2013.csv.gz): any edit changes
    it, even one that keeps the size and the modification time."""
    h = hashlib.sha256(f"{CACHE_VERSION}:{skip_bad_rows}".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:24]


def _load_npz(path: Path) -> Fer2013Arrays:
    """Our cache, or the ``.npz`` of ``shared/device/join.py`` (usage stored as strings there)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            usage = z["usage"]
            if usage.dtype.kind in "US":
                lookup = {u: i for i, u in enumerate(USAGES)}
                usage = np.array([lookup[str(u)] for u in usage], dtype=np.int8)
            bad = tuple(BadRow(int(line), str(reason)) for line, reason in
                        zip(z["bad_lines"], z["bad_reasons"], strict=True)) if "bad_lines" in z else ()
            return Fer2013Arrays(z["pixels"].reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
                                 z["emotion"].astype(np.int64), usage.astype(np.int8), bad)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path}: not a readable FER2013 .npz ({e})") from None


def load_fer2013(
    path: str | os.PathLike, skip_bad_rows: bool = False, use_cache: bool = True, verbose: bool = False
) -> Fer2013Arrays:
    """Load FER2013 from ``.csv``, ``.csv.gz`` or ``.npz``, through the cache when allowed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix == ".npz":
        return _load_npz(path)
    cached = cache_dir() / f"fer2013-{_cache_key(path, skip_bad_rows)}.npz"
    if use_cache and cached.is_file():
        try:
            return _load_npz(cached)
        except DataError:
            pass  # a damaged cache entry is rebuilt below
    arrays = parse_fer2013_csv(path, skip_bad_rows=skip_bad_rows)
    if verbose and arrays.bad_rows:
        print(f"skipped {len(arrays.bad_rows)} bad row(s) of {path}, first: "
              f"line {arrays.bad_rows[0].line}: {arrays.bad_rows[0].reason}")
    if use_cache:
        _write_cache(cached, arrays)
    return arrays


def _write_cache(target: Path, arrays: Fer2013Arrays) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f, pixels=arrays.pixels, emotion=arrays.emotion, usage=arrays.usage,
                bad_lines=np.array([b.line for b in arrays.bad_rows], dtype=np.int64),
                bad_reasons=np.array([b.reason for b in arrays.bad_rows], dtype=str),
            )
        os.replace(tmp, target)  # atomic: a reader never sees half a cache file
    except OSError as e:
        print(f"warning: could not write the data cache {target}: {e}", file=sys.stderr)


def describe_splits(arrays: Fer2013Arrays, num_classes: int) -> str:
    """A table of the class distribution of each split."""
    names = class_names(num_classes)
    rows = [f"{'split':<12}" + "".join(f"{n:>10}" for n in names) + f"{'total':>10}"]
    for usage in USAGES:
        _, emotion = arrays.split(usage)
        counts = np.bincount(map_labels(emotion, num_classes), minlength=num_classes)
        rows.append(f"{usage:<12}" + "".join(f"{c:>10}" for c in counts) + f"{counts.sum():>10}")
    return "\n".join(rows)
