"""The live WebSocket: one tracked, smoothed pipeline per client, errors that keep the session, and
the same Host and Origin rules as the rest of the service."""

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from ferkit.infer.pipeline import FacePipeline  # noqa: E402
from ferkit.infer.predictor import EmotionPredictor  # noqa: E402
from ferkit.serve.app import create_app  # noqa: E402
from ferkit.serve.config import ServiceConfig  # noqa: E402

LOCAL = "http://127.0.0.1"
LIVE = "ws://127.0.0.1/v1/live"  # the test client names its own host ("testserver") for relative WebSocket URLs


@pytest.fixture(scope="module")
def app(random_checkpoint):
    return create_app(ServiceConfig(model=str(random_checkpoint), device="cpu", max_live_sessions=2))


@pytest.fixture(scope="module")
def frames(face_image):
    """A steady face, moving a few pixels to and fro, as JPEG frames and as decoded frames."""
    encoded = [cv2.imencode(".jpg", np.roll(face_image, 4 * (i % 3), axis=1))[1].tobytes() for i in range(6)]
    return encoded, [cv2.imdecode(np.frombuffer(e, np.uint8), cv2.IMREAD_COLOR) for e in encoded]


def test_each_client_has_its_own_tracks_smoothed_as_the_webcam(app, frames, face_image, random_checkpoint):
    encoded, decoded = frames
    webcam = FacePipeline(EmotionPredictor(random_checkpoint, device="cpu"))  # what `ferkit webcam` runs
    expected = [webcam.process(frame) for frame in decoded]
    other = cv2.imencode(".jpg", np.roll(face_image, -60, axis=1))[1].tobytes()
    client = TestClient(app, base_url=LOCAL)
    with client.websocket_connect(LIVE) as first, client.websocket_connect(LIVE) as second:
        assert len(app.state.live.open) == 2
        for i, data in enumerate(encoded):
            first.send_bytes(data)
            answer = first.receive_json()
            assert answer["frame"] == i and [f["track_id"] for f in answer["faces"]] == [0]
            want = expected[i][0]
            assert answer["faces"][0]["emotion"] == want.emotion
            got = np.array(list(answer["faces"][0]["probabilities"].values()))
            assert np.abs(got - want.scores).max() < 1e-3  # smoothed exactly as the webcam's
            second.send_bytes(other)
            assert [f["track_id"] for f in second.receive_json()["faces"]] == [0]  # its own tracker: ids from 0
    assert app.state.live.open == {}  # both went away: their pipelines are freed


def test_bad_frames_get_an_answer_and_the_session_goes_on(app, frames):
    with TestClient(app, base_url=LOCAL).websocket_connect(LIVE) as live:
        live.send_bytes(b"not an image")
        assert live.receive_json()["status"] == 415
        live.send_text("hello")
        assert live.receive_json() == {"error": "send frames as binary messages (JPEG or PNG bytes)", "status": 400}
        live.send_bytes(frames[0][0])
        assert len(live.receive_json()["faces"]) == 1


def test_sessions_are_limited(app, frames):
    client = TestClient(app, base_url=LOCAL)
    with client.websocket_connect(LIVE), client.websocket_connect(LIVE):
        with client.websocket_connect(LIVE) as third:
            assert third.receive_json()["status"] == 503
            with pytest.raises(WebSocketDisconnect) as closed:
                third.receive_json()
            assert closed.value.code == 1013
    assert app.state.live.open == {}


def test_foreign_hosts_and_origins_are_refused(app):
    """Any web page may open a WebSocket to any address: the Origin header tells the service's own
    page (same host) from another site's."""
    client = TestClient(app, base_url=LOCAL)
    for headers in ({"origin": "https://evil.example"}, {"origin": "http://127.0.0.1:9999"}):
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(LIVE, headers=headers):
            pass
        assert refused.value.code == 1008
    with client.websocket_connect(LIVE, headers={"origin": LOCAL}):  # the service's own page
        pass
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("ws://rebind.example/v1/live"):
        pass


def test_live_detection_runs_in_the_worker_processes(random_checkpoint, frames):
    app = create_app(ServiceConfig(model=str(random_checkpoint), device="cpu"), processes=2)
    with TestClient(app, base_url=LOCAL) as client, client.websocket_connect(LIVE) as live:
        session = next(iter(app.state.live.open.values()))
        assert type(session.pipeline.detector).__name__ == "RemoteDetector"
        for data in frames[0][:4]:
            live.send_bytes(data)
            assert [f["track_id"] for f in live.receive_json()["faces"]] == [0]
