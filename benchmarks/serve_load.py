"""Load on the web service: N concurrent clients on loopback posting a 640x480 photo with one face.

    python benchmarks/serve_load.py [--clients 8] [--seconds 30] [-- extra ferkit serve flags]

Starts ``ferkit serve`` in its own process (or uses ``--url``), warms it up, then runs ``--clients``
clients in a loop for ``--seconds``, each waiting for its answer before sending again. Prints
requests per second, median and 99th-percentile latency, and errors (any non-200 answer or failed
request). The image is the bundled public-domain portrait, cropped to 4:3 around the face and
resized to 640x480. Results go to ``reports/inference/serve_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
from common import machine

from ferkit.apps.media import EXAMPLES_DIR
from ferkit.infer.detection import detect_faces


def test_image() -> bytes:
    image = cv2.imread(str(EXAMPLES_DIR / "obama.jpg"))
    x, y, w, h = detect_faces(image)[0]
    height, width = image.shape[:2]
    crop_w = min(width, int(w * 2.5))
    crop_h = crop_w * 3 // 4
    x0 = min(max(0, x + w // 2 - crop_w // 2), width - crop_w)
    y0 = min(max(0, y + h // 2 - crop_h // 2), height - crop_h)
    frame = cv2.resize(image[y0 : y0 + crop_h, x0 : x0 + crop_w], (640, 480), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


async def client_loop(client: httpx.AsyncClient, url: str, data: bytes, stop: float, latencies: list[float],
                      errors: list[str]) -> None:
    while time.perf_counter() < stop:
        start = time.perf_counter()
        try:
            response = await client.post(url, files={"file": ("face.jpg", data, "image/jpeg")})
            if response.status_code != 200 or len(response.json()["faces"]) != 1:
                errors.append(f"{response.status_code}: {response.text[:100]}")
                continue
        except httpx.HTTPError as e:
            errors.append(repr(e))
            continue
        latencies.append(time.perf_counter() - start)


async def run_load(base: str, clients: int, seconds: float, data: bytes) -> dict:
    url = f"{base}/v1/predict"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        for _ in range(10):  # warm-up
            await client.post(url, files={"file": ("face.jpg", data, "image/jpeg")})
        latencies: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client, url, data, start + seconds, latencies, errors)
                               for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies),
            "requests_per_s": len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "errors": len(errors),
            "first_errors": errors[:3]}


def start_server(extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "ferkit", "serve", "--port", str(port), *extra])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--url", help="an already running service (default: start one)")
    parser.add_argument("--out", default="reports/inference/serve_load.json")
    parser.add_argument("serve_args", nargs="*", help="flags for ferkit serve (after --)")
    args = parser.parse_args()

    server, base = (None, args.url) if args.url else start_server(args.serve_args)
    try:
        data = test_image()
        runs = []
        for clients in args.clients:
            result = asyncio.run(run_load(base, clients, args.seconds, data))
            runs.append(result)
            print(f"{clients} clients, {result['seconds']} s: {result['requests']} requests, "
                  f"{result['requests_per_s']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, "
                  f"p99 {result['p99_ms']:.1f} ms, "
                  f"{result['errors']} errors")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    record = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "serve_args": args.serve_args,
              "image": "640x480 JPEG, one face", "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out} ({machine()})")


if __name__ == "__main__":
    main()
