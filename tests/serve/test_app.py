"""The web service through FastAPI's TestClient: every endpoint, every error, and a schema-driven fuzz run."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

import ferkit  # noqa: E402
from ferkit.infer.models import MODELS  # noqa: E402
from ferkit.serve.app import WEB_DIR, create_app  # noqa: E402
from ferkit.serve.config import ServiceConfig  # noqa: E402

LIMITS = {"max_upload_bytes": 2_000_000, "max_batch": 3, "max_pixels": 2_000_000}
LOCAL = "http://127.0.0.1"  # a loopback name: the service refuses others


@pytest.fixture(scope="module")
def app(random_checkpoint):
    return create_app(ServiceConfig(model=str(random_checkpoint), device="cpu", pipelines=2, **LIMITS))


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, base_url=LOCAL)


@pytest.fixture(scope="module")
def face_jpeg(face_image):
    return cv2.imencode(".jpg", face_image)[1].tobytes()


def _post(client, data, name="photo.jpg", content_type="image/jpeg"):
    return client.post("/v1/predict", files={"file": (name, data, content_type)})


def test_health_and_model(client):
    assert client.get("/v1/health").json()["status"] == "ok"
    model = client.get("/v1/model").json()
    assert model["classes"] == ["angry", "sad", "happy", "neutral"]
    assert model["fer2013_mapping"]["disgust"] == "angry" and model["fer2013_mapping"]["surprise"] == "neutral"


def test_bundled_model_reports_its_accuracy_and_card():
    client = TestClient(create_app(ServiceConfig(device="cpu")), base_url=LOCAL)
    model = client.get("/v1/model").json()
    assert model["name"] == json.loads(MODELS["fast"].card.read_text())["name"]
    assert 0.6 < model["accuracy"]["onnxruntime_int8"]["PrivateTest"] < 0.8
    assert model["temperature"] > 0 and model["min_confidence"] == 0
    card = client.get(model["model_card"])
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/markdown")
    assert "Intended use" in card.text and "Not for decisions about people" in card.text


def test_page_links_the_card_rendered(client):
    """The page's "model card" link opens the card as a page: headings and tables, not raw Markdown."""
    page = client.get("/").text
    link = re.search(r'<a href="([^"]+)">model card</a>', page).group(1)
    card = client.get(link)
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/html")
    assert "<h1>" in card.text and "<table>" in card.text and "<h2>Intended use" in card.text
    assert "|---" not in card.text and "\n## " not in card.text


def test_predict_one_face(client, face_jpeg):
    response = _post(client, face_jpeg)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (640, 480) and len(body["faces"]) == 1
    face = body["faces"][0]
    assert 215 <= face["box"]["x"] + face["box"]["w"] / 2 <= 425
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-4 and face["emotion"] in face["probabilities"]
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] > 0 and body["model"]


def test_content_is_checked_by_decoding_not_by_name(client, face_image):
    png = cv2.imencode(".png", face_image)[1].tobytes()
    assert _post(client, png, "notes.txt", "text/plain").status_code == 200
    response = _post(client, b"GIF89a but not really" * 10, "photo.jpg", "image/jpeg")
    assert response.status_code == 415 and "not a readable image" in response.json()["detail"]


def test_no_face(client):
    blank = cv2.imencode(".png", np.full((120, 160, 3), 128, np.uint8))[1].tobytes()
    assert _post(client, blank).json()["faces"] == []


@pytest.mark.parametrize(
    "make, status, message",
    [
        (lambda jpg: b"", 400, "empty (no bytes)"),
        (lambda jpg: b"plain text, not an image", 415, "not a readable image"),
        (lambda jpg: jpg[: len(jpg) // 3], 415, "truncated"),  # refused, as files are
        (lambda jpg: b"\xff" * 2_100_000, 413, "upload limit"),
        (lambda jpg: cv2.imencode(".png", np.zeros((2000, 1500), np.uint8))[1].tobytes(), 413, "over the limit"),
    ],
)
def test_upload_errors(client, face_jpeg, make, status, message):
    response = _post(client, make(face_jpeg))
    if status is None:
        assert response.status_code in (200, 415)
    else:
        assert response.status_code == status and message in response.json()["detail"]
    assert client.get("/v1/health").status_code == 200  # and the service keeps serving


def test_missing_field_is_a_json_4xx(client):
    response = client.post("/v1/predict")
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)  # as the API promises
    assert "file" in response.json()["detail"]


def test_batch(client, face_jpeg):
    blank = cv2.imencode(".png", np.full((60, 80, 3), 50, np.uint8))[1].tobytes()
    response = client.post("/v1/predict/batch", files=[("files", ("a.jpg", face_jpeg)), ("files", ("b.png", blank))])
    assert response.status_code == 200, response.text
    assert [len(r["faces"]) for r in response.json()["results"]] == [1, 0]
    too_many = [("files", (f"{i}.jpg", face_jpeg)) for i in range(4)]
    response = client.post("/v1/predict/batch", files=too_many)
    assert response.status_code == 400 and "over the limit of 3" in response.json()["detail"]
    response = client.post("/v1/predict/batch", files=[("files", ("a.jpg", face_jpeg)), ("files", ("b.jpg", b"x")),
                                                       ("files", ("c.jpg", face_jpeg))])
    assert response.status_code == 200, response.text  # the good files' results, and the bad one's error
    first, bad, third = response.json()["results"]
    assert len(first["faces"]) == 1 and third["faces"] == first["faces"]
    assert bad["filename"] == "b.jpg" and bad["status"] == 415 and "b.jpg: not a readable image" in bad["error"]


def test_concurrent_requests(client, face_jpeg):
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: _post(client, face_jpeg), range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    assert len({str(r.json()["faces"][0]["probabilities"]) for r in responses}) == 1


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "getUserMedia" in client.get("/static/app.js").text
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    for path in WEB_DIR.iterdir():  # no CDN, no web font: nothing outside the service
        assert not re.search(r"https?://", path.read_text()), path.name
    assert client.get("/openapi.json").json()["info"]["version"] == ferkit.__version__
    docs = client.get("/docs")
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text and not re.search(r"https?://", docs.text)
    assert assets and all(client.get(a).status_code == 200 for a in assets)  # Swagger UI from the service itself


# The schema is built at import (schemathesis's fixture loader does not work with this pytest), on the
# bundled model: a fuzzed request must get a 2xx or a 4xx, never a 5xx.
api_schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ServiceConfig(
    device="cpu", allowed_hosts=("testserver",), **LIMITS)))  # the name schemathesis's ASGI client sends


@api_schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_never_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error])


def test_worker_processes(random_checkpoint, face_jpeg):
    app = create_app(ServiceConfig(model=str(random_checkpoint), device="cpu", **LIMITS), processes=2)
    with TestClient(app, base_url=LOCAL) as client:  # the context runs the app's lifespan: workers stop at the end
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: _post(client, face_jpeg), range(8)))
        assert [len(r.json()["faces"]) for r in responses] == [1] * 8
        response = _post(client, b"not an image at all")  # an error raised in a worker keeps its status
        assert response.status_code == 415 and "not a readable image" in response.json()["detail"]


def test_host_header_must_be_a_loopback_name_unless_allowed(app, random_checkpoint):
    """A page on another site whose DNS name points at 127.0.0.1 (DNS rebinding) gets nothing."""
    for base in ("http://127.0.0.1:8000", "http://localhost", "http://[::1]:8000"):
        assert TestClient(app, base_url=base).get("/v1/health").status_code == 200, base
    refused = TestClient(app, base_url="http://attacker.example").get("/v1/model")
    assert refused.status_code == 400 and "not allowed" in refused.json()["detail"]
    opened = create_app(ServiceConfig(model=str(random_checkpoint), device="cpu", allowed_hosts=("*",)))
    assert TestClient(opened, base_url="http://attacker.example").get("/v1/health").status_code == 200


def test_cors_is_off_unless_an_origin_is_given(client, random_checkpoint):
    asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/predict", headers=asked).headers
    assert "access-control-allow-origin" not in client.get("/v1/health", headers=asked).headers
    shared = TestClient(create_app(ServiceConfig(model=str(random_checkpoint), device="cpu",
                                                 cors_origins=("https://app.example",))), base_url=LOCAL)
    preflight = shared.options("/v1/predict", headers=asked)
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = shared.get("/v1/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_pixel_bombs_get_413_and_undecodable_files_415(client):
    from conftest import png_claiming

    for width in (8_000, 100_000):  # over the limit; over Pillow's own bomb limit too
        response = _post(client, png_claiming(width, width), "bomb.png", "image/png")
        assert response.status_code == 413 and "pixels" in response.json()["detail"]
    broken = png_claiming(64, 64)[:-30] + b"\x00" * 30  # a readable header, then garbage
    response = _post(client, broken, "broken.png", "image/png")
    assert response.status_code in (200, 415) and response.headers["content-type"] == "application/json"


def test_a_killed_worker_is_replaced(random_checkpoint, face_jpeg):
    """kill -9 on a worker process: at most the request in flight fails (503, JSON); the service
    heals itself and /v1/health says how it went."""
    import os
    import signal
    import time

    app = create_app(ServiceConfig(model=str(random_checkpoint), device="cpu", **LIMITS), processes=2)
    with TestClient(app, base_url=LOCAL) as client:
        health = client.get("/v1/health").json()
        assert health["status"] == "ok" and health["workers"]["alive"] == 2
        victim = next(iter(app.state.workers.executor._processes))
        os.kill(victim, signal.SIGKILL)
        time.sleep(1)
        statuses = [_post(client, face_jpeg) for _ in range(3)]
        assert all(r.headers["content-type"] == "application/json" for r in statuses)
        assert [r.status_code for r in statuses].count(503) <= 1 and statuses[-1].status_code == 200
        after = client.get("/v1/health").json()
        assert after["status"] == "ok" and after["workers"]["restarts"] == 1 and after["workers"]["alive"] == 2


@pytest.mark.slow  # over 10 s on 2 cores: CI runs it (pytest -m 'slow or not slow')
def test_workers_are_recycled_after_their_quota(random_checkpoint, face_jpeg):
    config = ServiceConfig(model=str(random_checkpoint), device="cpu", max_requests_per_worker=2, **LIMITS)
    app = create_app(config, processes=2)
    with TestClient(app, base_url=LOCAL) as client:
        first = set(app.state.workers.executor._processes)
        assert all(_post(client, face_jpeg).status_code == 200 for _ in range(6))
        assert set(app.state.workers.executor._processes) != first  # fresh processes took over
        assert client.get("/v1/health").json()["workers"]["restarts"] == 0  # recycling is not a failure


def test_bodies_are_limited_while_they_arrive(client):
    """No Content-Length (chunked) or a slow upload: refused once past the limit, not after storing it all."""
    import asyncio

    from ferkit.serve.app import BodyLimit

    chunk = b"x" * 65536
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    too_big = (c for c in [part] + [chunk] * 200)  # a 12.5 MiB file part, streamed without a Content-Length
    response = client.post("/v1/predict", content=too_big, headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "over the upload limit" in response.json()["detail"]
    claimed = client.post("/v1/predict", content=b"tiny", headers={"content-length": str(50 * 2**20)})
    assert claimed.status_code == 413 and "52428800 bytes" in claimed.json()["detail"]

    read, sent = [], []

    async def receive():
        read.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    async def greedy_app(scope, receive, send):  # reads until the body ends, as a form parser storing an upload
        while (await receive())["type"] == "http.request":
            pass
        await send({"type": "http.response.start", "status": 400, "headers": []})  # what a parser cut short says
        await send({"type": "http.response.body", "body": b"{}"})

    limited = BodyLimit(greedy_app, limits={}, default=1_000_000)
    asyncio.run(limited({"type": "http", "path": "/v1/predict", "headers": []}, receive, send))
    assert sum(read) <= 1_000_000 + len(chunk) and sent[0]["status"] == 413
