"""A soak of the web service: clients sending a mix of valid and hostile uploads for minutes, with
worker processes killed along the way, while the workers' memory is watched.

    python benchmarks/serve_soak.py [--clients 8] [--seconds 600] [--kill-every 150] [-- serve flags]

Starts ``ferkit serve`` on loopback (its defaults: one worker process per core, each recycled after
``--max-requests-per-worker`` requests) and first checks every kind of upload once on its own, then
has ``--clients`` clients each pick kinds at random (a fixed seed) for ``--seconds``. Every
``--kill-every`` seconds one worker process gets SIGKILL. It counts, per kind, the answers by
status; a failure is any answer outside the kind's expected statuses, any error body that is not
JSON, or a dropped connection (allowed only for bodies over the upload limit, which the service
stops reading). A 503 is expected only within ``--grace`` seconds of a kill: the documented answer
for the requests a dead worker held. Worker memory (resident, from /proc) is sampled every 2 s:
bounded means the peak over the last third of the run is at most 32 MiB above the peak over the
first third. Results go to ``reports/inference/serve_soak.json``; the exit code is 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import struct
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
from common import machine, rss_kib
from PIL import Image
from serve_load import start_server, test_image

from ferkit.serve.config import ServiceConfig

LIMIT = ServiceConfig().max_upload_bytes


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming ``width`` x ``height`` pixels, in a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@dataclass
class Kind:
    """One kind of request: how to send it and the statuses it may get."""

    name: str
    weight: int  # how often it is picked, relative to the others
    expected: set[int]
    body: bytes = b""
    field: str = "file"
    route: str = "/v1/predict"
    files: int = 1  # for the batch route
    host: str | None = None
    chunked: bool = False  # streamed without Content-Length
    may_drop: bool = False  # the service may close the connection before the client has sent it all


def kinds() -> list[Kind]:
    face = test_image()
    frame = cv2.imdecode(np.frombuffer(face, np.uint8), cv2.IMREAD_COLOR)
    rng = np.random.default_rng(0)
    gif = io.BytesIO()
    Image.new("L", (64, 48), 90).save(gif, "GIF")
    return [
        Kind("face_jpeg", 30, {200}, face),
        Kind("face_png", 6, {200}, cv2.imencode(".png", frame)[1].tobytes()),
        Kind("no_face", 6, {200}, cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()),
        Kind("one_pixel", 4, {200}, cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()),
        Kind("truncated_jpeg", 4, {200, 415}, face[: len(face) // 2]),
        Kind("batch_of_4", 4, {200}, face, route="/v1/predict/batch", field="files", files=4),
        Kind("empty", 4, {400}, b""),
        Kind("random_bytes", 4, {415}, rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()),
        Kind("text_as_jpeg", 3, {415}, b"not an image at all\n" * 10),
        Kind("gif", 3, {200}, gif.getvalue()),  # OpenCV 4.7+ decodes GIF (the first frame)
        Kind("pixel_bomb_png", 4, {413}, png_claiming(100_000, 100_000)),
        Kind("large_dims_png", 3, {413}, png_claiming(8000, 6000)),
        Kind("over_limit", 2, {413}, b"\xff" * (LIMIT + (1 << 20)), may_drop=True),
        Kind("over_limit_chunked", 2, {413}, b"\xff" * (LIMIT + (1 << 20)), chunked=True, may_drop=True),
        Kind("wrong_field", 3, {422}, face, field="image"),
        Kind("batch_too_many", 2, {400, 413}, b"x", route="/v1/predict/batch", field="files",
             files=ServiceConfig().max_batch + 1),
        Kind("foreign_host", 3, {400}, face, host="rebind.example"),
    ]


@dataclass
class Tally:
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)
    unexpected_503: int = 0
    latencies: list[float] = field(default_factory=list)  # valid single-face requests, seconds


def multipart(kind: Kind) -> tuple[bytes, str]:
    """The multipart body of a request of this kind, and its Content-Type."""
    boundary = "ferkitsoakboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{kind.field}"; filename="upload{i}.jpg"\r\n'
             f"Content-Type: image/jpeg\r\n\r\n".encode() + kind.body + b"\r\n" for i in range(kind.files)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def send(client: httpx.AsyncClient, base: str, kind: Kind, kills: list[float], grace: float,
               tally: Tally) -> None:
    body, content_type = multipart(kind)
    headers = {"content-type": content_type, **({"host": kind.host} if kind.host else {})}

    async def stream():
        for i in range(0, len(body), 1 << 16):
            yield body[i : i + (1 << 16)]

    start = time.perf_counter()
    try:
        response = await client.post(base + kind.route, content=stream() if kind.chunked else body, headers=headers)
    except httpx.TransportError as e:  # the service stopped reading and closed: fine for bodies over the limit
        tally.statuses[kind.name]["dropped"] += 1
        if not kind.may_drop:
            tally.failures.append(f"{kind.name}: connection failed ({e!r})")
        return
    status = response.status_code
    tally.statuses[kind.name][status] += 1
    if status != 200:
        try:
            json.loads(response.content)["detail"]
        except (ValueError, KeyError, TypeError):
            tally.failures.append(f"{kind.name}: {status} without a JSON detail: {response.text[:80]!r}")
    if status == 503:
        if not any(0 <= time.monotonic() - k <= grace for k in kills):
            tally.unexpected_503 += 1
            tally.failures.append(f"{kind.name}: 503 with no worker killed in the last {grace:.0f} s")
    elif status not in kind.expected:
        tally.failures.append(f"{kind.name}: {status} (expected {sorted(kind.expected)}): {response.text[:120]!r}")
    elif kind.name == "face_jpeg":
        tally.latencies.append(time.perf_counter() - start)


def workers_of(server_pid: int) -> dict[int, int]:
    """Resident KiB of each worker process of the server (its spawned children, not the resource tracker)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            if (kib := rss_kib(entry.name)) is not None:  # None: it exited meanwhile
                out[int(entry.name)] = kib
    return out


async def soak(base: str, server_pid: int, table: list[Kind], clients: int, seconds: float, kill_every: float,
               grace: float, seed: int) -> dict:
    tally, kills, memory = Tally(), [], []
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for kind in table:  # each kind once, alone: its answer is what the soak expects
            await send(client, base, kind, kills, grace, tally)
        start = time.monotonic()
        stop = start + seconds

        async def one_client(k: int) -> None:
            local = random.Random(seed * 1000 + k)
            while time.monotonic() < stop:
                await send(client, base, local.choices(table, [t.weight for t in table])[0], kills, grace, tally)

        async def watch() -> None:
            next_kill = start + kill_every if kill_every else float("inf")
            while time.monotonic() < stop:
                rss = workers_of(server_pid)
                memory.append((round(time.monotonic() - start, 1), sorted(rss.values())))
                if time.monotonic() >= next_kill and rss:
                    os.kill(rng.choice(sorted(rss)), signal.SIGKILL)
                    kills.append(time.monotonic())
                    next_kill += kill_every
                await asyncio.sleep(2)

        await asyncio.gather(watch(), *(one_client(k) for k in range(clients)))
        health = (await client.get(base + "/v1/health")).json()
    third = seconds / 3
    peak = lambda lo, hi: max((max(r) for t, r in memory if lo <= t < hi and r), default=0)  # noqa: E731
    first, last = peak(0, third), peak(2 * third, seconds + 1)
    requests = sum(sum(c.values()) for c in tally.statuses.values())
    ms = np.array(tally.latencies) * 1000
    return {
        "clients": clients, "seconds": seconds, "requests": requests, "kills": len(kills),
        "statuses": {k: {str(s): n for s, n in c.items()} for k, c in sorted(tally.statuses.items())},
        "server_errors": sum(n for c in tally.statuses.values() for s, n in c.items()
                             if isinstance(s, int) and s >= 500),
        "answers_503": sum(c.get(503, 0) for c in tally.statuses.values()), "unexpected_503": tally.unexpected_503,
        "failures": len(tally.failures), "first_failures": tally.failures[:10],
        "face_jpeg_p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "worker_rss_peak_mib": {"first_third": round(first / 1024, 1), "last_third": round(last / 1024, 1)},
        "memory_bounded": last <= first + 32 * 1024, "health_at_end": health,
        "worker_rss_mib_every_2s": [(t, [round(r / 1024) for r in rss]) for t, rss in memory],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--kill-every", type=float, default=150, help="SIGKILL one worker this often (0: never)")
    parser.add_argument("--grace", type=float, default=30, help="seconds after a kill in which a 503 is expected")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reports/inference/serve_soak.json")
    parser.add_argument("serve_args", nargs="*", help="flags for ferkit serve (after --)")
    args = parser.parse_args()

    server, base = start_server(args.serve_args)
    try:
        result = asyncio.run(soak(base, server.pid, kinds(), args.clients, args.seconds, args.kill_every,
                                  args.grace, args.seed))
    finally:
        server.terminate()
        server.wait(timeout=30)
    rss = result["worker_rss_peak_mib"]
    print(f"{result['requests']} requests from {args.clients} clients in {args.seconds:.0f} s, {result['kills']} "
          f"workers killed: {result['server_errors']} answers 5xx ({result['answers_503']} of them 503, "
          f"{result['unexpected_503']} with no kill before), {result['failures']} failures; worker memory peak "
          f"{rss['first_third']} MiB in the first third, {rss['last_third']} MiB in the last "
          f"({'bounded' if result['memory_bounded'] else 'NOT bounded'}); health at the end: "
          f"{result['health_at_end'].get('workers')}")
    for failure in result["first_failures"]:
        print("  ", failure)
    record = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "serve_args": args.serve_args, **result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"written to {args.out} ({machine()})")
    raise SystemExit(1 if result["failures"] or not result["memory_bounded"] else 0)


if __name__ == "__main__":
    main()
