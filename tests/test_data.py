import gzip
import os
import time

import numpy as np
import pytest
from conftest import REAL_CSV, SPLIT_SIZES, needs_real_data, synthetic_rows, write_csv

from ferkit import data
from ferkit.data import (
    EMOTIONS_4,
    DataError,
    describe_splits,
    load_fer2013,
    map_labels,
    parse_fer2013_csv,
)


def test_parses_good_rows(fer_csv):
    arrays = parse_fer2013_csv(fer_csv)
    n = sum(SPLIT_SIZES.values())
    assert arrays.pixels.shape == (n, 48, 48) and arrays.pixels.dtype == np.uint8
    assert arrays.emotion.tolist() == [i % 7 for i in range(n)]
    # the first row's pixels survive the vectorized parse exactly
    first = synthetic_rows()[1].split(",")[1]
    assert arrays.pixels[0].ravel().tolist() == [int(v) for v in first.split()]


def test_reads_gzip_and_crlf(tmp_path):
    lines = synthetic_rows({"Training": 3, "PublicTest": 1, "PrivateTest": 1})
    gz = write_csv(tmp_path / "f.csv.gz", lines)
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    assert np.array_equal(parse_fer2013_csv(gz).pixels, parse_fer2013_csv(crlf).pixels)


def _with_bad_row(tmp_path, bad: str):
    lines = synthetic_rows({"Training": 4, "PublicTest": 2, "PrivateTest": 2})
    lines.insert(3, bad)  # becomes line 4 of the file
    return write_csv(tmp_path / "bad.csv", lines)


GOOD_PIXELS = " ".join(["7"] * 2304)


@pytest.mark.parametrize(
    "row, reason",
    [
        (f"3,{' '.join(['7'] * 2303)},Training", "expected 2304 pixel values, found 2303"),
        (f"3,{GOOD_PIXELS} 7,Training", "expected 2304 pixel values, found 2305"),
        (f"3,{GOOD_PIXELS[:-1]}256,Training", "pixel value 256 outside 0-255"),
        (f"3,{GOOD_PIXELS[:-1]}1000,Training", "pixel value with more than 3 digits outside 0-255"),
        (f"3,{GOOD_PIXELS[:-1]}0255,Training", "pixel value with more than 3 digits outside 0-255"),
        (f"3,-1 {GOOD_PIXELS[2:]},Training", "found characters b'-'"),
        (f"3,{GOOD_PIXELS[:-1]}x,Training", "found characters b'x'"),
        (f"7,{GOOD_PIXELS},Training", "emotion label b'7' is not an integer 0-6"),
        (f"happy,{GOOD_PIXELS},Training", "emotion label b'happy'"),
        (f"3,{GOOD_PIXELS},Validation", "unknown Usage b'Validation'"),
        (f"3,{GOOD_PIXELS}", "expected 3 columns"),
        (f"3,{' '.join([GOOD_PIXELS] * 15)},Training", "longer than 65536 bytes"),
    ],
)
def test_bad_rows_are_reported_with_line_and_reason(tmp_path, row, reason):
    path = _with_bad_row(tmp_path, row)
    with pytest.raises(DataError) as err:
        parse_fer2013_csv(path)
    assert "line 4:" in str(err.value) and reason in str(err.value) and str(path) in str(err.value)
    # --skip-bad-rows drops and counts it instead
    arrays = parse_fer2013_csv(path, skip_bad_rows=True)
    assert len(arrays.emotion) == 8 and [b.line for b in arrays.bad_rows] == [4]


def test_missing_column_in_header(tmp_path):
    path = tmp_path / "two_cols.csv"
    path.write_text(f"emotion,pixels\n3,{GOOD_PIXELS}\n")
    with pytest.raises(DataError, match=r"line 1: .*lacks column\(s\) \['Usage'\]"):
        parse_fer2013_csv(path)


def test_huge_line_costs_no_memory_and_a_short_error(tmp_path):
    """A file with no newline (here 96 MiB) is refused with a one-line error, never held in memory."""
    import subprocess
    import sys

    flat = tmp_path / "flat.csv"
    with open(flat, "wb") as f:
        f.write(b"emotion,pixels,Usage\n")
        for _ in range(96):
            f.write(b"7 " * (1 << 19))
    code = ("import resource, sys; from ferkit.data import parse_fer2013_csv, DataError\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try: parse_fer2013_csv(sys.argv[1])\n"
            "except DataError as e: msg = str(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, len(msg)); print(msg)")
    out = subprocess.run([sys.executable, "-c", code, str(flat)], capture_output=True, text=True, check=True).stdout
    grown_kib, msg_len = map(int, out.split("\n")[0].split())
    assert grown_kib < 16 << 10 and msg_len < 300, out[:500]
    assert "line 2: longer than 65536 bytes" in out
    no_header = tmp_path / "no_header.csv"
    no_header.write_bytes(b"1," * (40 << 10))
    with pytest.raises(DataError, match="line 1 is longer than 65536 bytes") as err:
        parse_fer2013_csv(no_header)
    assert len(str(err.value)) < 300


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_fer2013(tmp_path / "nope.csv")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"emotion,pixels,Usage\n" * 1000)[:50])
    with pytest.raises(DataError, match="cannot read"):
        load_fer2013(broken)


def test_seven_to_four_mapping():
    # angry+disgust -> angry, fear+sad -> sad, happy, surprise+neutral -> neutral
    assert map_labels(np.arange(7), 4).tolist() == [0, 0, 1, 2, 1, 3, 3]
    assert map_labels(np.arange(7), 7).tolist() == list(range(7))
    assert EMOTIONS_4 == ("angry", "sad", "happy", "neutral")
    with pytest.raises(ValueError):
        map_labels(np.arange(7), 5)


def test_split_counts_and_distribution(fer_csv):
    arrays = load_fer2013(fer_csv)
    for usage, n in SPLIT_SIZES.items():
        assert len(arrays.split(usage)[1]) == n
    assert len(arrays.split("val")[1]) == SPLIT_SIZES["PublicTest"]
    table = describe_splits(arrays, 4)
    assert "Training" in table and "neutral" in table and str(SPLIT_SIZES["Training"]) in table


def test_cache_hit_and_invalidation(fer_csv, monkeypatch):
    first = load_fer2013(fer_csv)
    calls = []
    real_parse = data.parse_fer2013_csv
    monkeypatch.setattr(data, "parse_fer2013_csv", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
    second = load_fer2013(fer_csv)
    assert calls == [] and np.array_equal(first.pixels, second.pixels)
    # a changed file (new content, new mtime) is parsed again
    write_csv(fer_csv, synthetic_rows(seed=1))
    os.utime(fer_csv, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_fer2013(fer_csv)
    assert calls == [1] and not np.array_equal(first.pixels, third.pixels)


def test_cache_sees_an_edit_in_the_middle(tmp_path, monkeypatch):
    """An edit deep inside a file (past its first and last MiB) that keeps its size and modification
    time is parsed again, not served from the cache."""
    path = write_csv(tmp_path / "big.csv", synthetic_rows({"Training": 500, "PublicTest": 50, "PrivateTest": 50}))
    assert path.stat().st_size > 4 << 20
    first = load_fer2013(path)
    st = path.stat()
    raw = bytearray(path.read_bytes())
    middle = raw.index(b"\n", len(raw) // 2) + 1  # the label digit of a row in the middle
    raw[middle : middle + 1] = b"0" if raw[middle : middle + 1] != b"0" else b"1"
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert not np.array_equal(first.emotion, load_fer2013(path).emotion)


def test_corrupt_cache_is_rebuilt(fer_csv):
    load_fer2013(fer_csv)
    for f in data.cache_dir().glob("*.npz"):
        f.write_bytes(b"garbage")
    assert len(load_fer2013(fer_csv).emotion) == sum(SPLIT_SIZES.values())


def test_loads_device_npz(tmp_path, fer_csv):
    """The .npz of shared/device/join.py (usage as strings) loads like a CSV."""
    arrays = parse_fer2013_csv(fer_csv)
    npz = tmp_path / "fer.npz"
    np.savez(npz, pixels=arrays.pixels, emotion=arrays.emotion,
             usage=np.array([data.USAGES[u] for u in arrays.usage]), row=np.arange(len(arrays.emotion)))
    loaded = load_fer2013(npz)
    assert np.array_equal(loaded.usage, arrays.usage) and np.array_equal(loaded.pixels, arrays.pixels)


@needs_real_data
def test_real_fer2013_counts():
    start = time.perf_counter()
    arrays = load_fer2013(REAL_CSV)
    parse_seconds = time.perf_counter() - start
    expected = {"Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
                "PublicTest": [467, 56, 496, 895, 653, 415, 607],
                "PrivateTest": [491, 55, 528, 879, 594, 416, 626]}
    for usage, counts in expected.items():
        assert np.bincount(arrays.split(usage)[1], minlength=7).tolist() == counts
    assert not arrays.bad_rows
    start = time.perf_counter()
    load_fer2013(REAL_CSV)
    assert time.perf_counter() - start < parse_seconds  # the cache beats parsing
