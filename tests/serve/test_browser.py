"""The live page in a real browser: headless Chromium (Debian's package) driven by Playwright, its fake
camera fed a clip of a face made here; checks that labelled boxes appear, and that uploads work."""

import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A raw YUV 4:2:0 clip, the format Chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def server_url(random_checkpoint):
    import uvicorn

    from ferkit.serve.app import create_app
    from ferkit.serve.config import ServiceConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ServiceConfig(model=str(random_checkpoint), device="cpu")),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_live_webcam_and_upload(server_url, face_image, tmp_path):
    clip = write_y4m(tmp_path / "face.y4m", [np.roll(face_image, 3 * i, axis=1) for i in range(20)])
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), face_image)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server_url)
            page.click("#camera")
            page.wait_for_selector("#faces .face", timeout=30_000)  # a labelled face from the live stream
            assert page.inner_text("#faces .face .face-label").startswith("Face #0: ")  # numbered as the CLI and API do
            assert page.locator("#faces .face .bar").count() == 4
            page.wait_for_function("document.getElementById('fps').textContent.includes('FPS')", timeout=30_000)
            page.click("#camera")  # stop
            page.evaluate("document.getElementById('faces').replaceChildren()")
            page.set_input_files("#file", str(photo))
            page.wait_for_function("document.getElementById('status').textContent === '1 face found.'",
                                   timeout=30_000)
            assert page.locator("#faces .face").count() == 1
            width = page.evaluate("document.getElementById('canvas').width")
            assert width == 640 and errors == []
        finally:
            browser.close()


def test_api_docs_work_offline(server_url):
    """Every request that leaves the service is cut: the docs must still list the operations."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            outside = []

            def only_the_service(route):
                if route.request.url.startswith(server_url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_the_service)
            page.goto(f"{server_url}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            operations = page.locator(".opblock-summary-path").all_inner_texts()
            assert {"/v1/predict", "/v1/predict/batch", "/v1/health", "/v1/model"} <= set(operations)
            assert outside == []
        finally:
            browser.close()


def test_chromium_plays_the_annotated_video(tmp_path, face_image, random_checkpoint):
    """`ferkit video` writes what a browser plays: H.264 MP4 reaches HAVE_CURRENT_DATA, no media error."""
    from conftest import clip_with_tone

    from ferkit.cli import main

    clip = clip_with_tone(tmp_path / "in.mp4", [np.roll(face_image, 3 * i, axis=1) for i in range(20)])
    out = tmp_path / "out.mp4"
    assert main(["video", str(clip), "--out", str(out), "--quiet", "--model", str(random_checkpoint)]) == 0
    (tmp_path / "play.html").write_text('<video id="v" src="out.mp4" muted preload="auto"></video>')
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.goto((tmp_path / "play.html").as_uri())
            page.wait_for_function("document.getElementById('v').readyState >= 2 || document.getElementById('v').error",
                                   timeout=30_000)
            state = page.evaluate("(() => { const v = document.getElementById('v'); "
                                  "return [v.readyState, v.error && v.error.code, v.videoWidth, v.duration]; })()")
            assert state[1] is None and state[0] >= 2 and state[2] == 640 and abs(state[3] - 2.0) < 0.2, state
        finally:
            browser.close()
