"""The Python API's one result shape: every input kind, colour order, lists, JSON, and the same answer
from every entry point."""

import json
import re

import cv2
import numpy as np
import pytest

from ferkit import EmotionPredictor
from ferkit.apps.media import EXAMPLES_DIR
from ferkit.cli import main
from ferkit.infer.predictor import Face, ImageError, decode_image, load_image

PHOTO = EXAMPLES_DIR / "obama.jpg"


@pytest.fixture(scope="module")
def bundled():
    return EmotionPredictor(device="cpu")


def _summary(faces):
    return [(f.box, f.emotion) for f in faces]


def test_every_input_kind_gives_the_same_faces(bundled):
    from PIL import Image

    bgr = cv2.imread(str(PHOTO))
    expected = bundled.predict(bgr)
    assert expected and all(isinstance(f, Face) for f in expected)
    for image, color in ((str(PHOTO), "bgr"), (PHOTO, "bgr"), (Image.open(PHOTO), "bgr"),
                         (np.ascontiguousarray(bgr[..., ::-1]), "rgb"), (cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "bgr"),
                         ((bgr.astype(np.uint16) * 257), "bgr")):
        faces = bundled.predict(image, color=color)
        assert _summary(faces) == _summary(expected), type(image)
        assert np.allclose(faces[0].scores, expected[0].scores, atol=2e-3)
    listed = bundled.predict([PHOTO, bgr])
    assert [_summary(f) for f in listed] == [_summary(expected)] * 2


def test_color_order_is_honoured():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert load_image(rgb, "rgb")[0, 0].tolist() == [0, 0, 200]
    assert load_image(rgb)[0, 0].tolist() == [200, 0, 0]  # taken as BGR: blue
    with pytest.raises(ValueError, match="color must be one of"):
        load_image(rgb, "hsv")
    with pytest.raises(TypeError, match="path, a PIL image or a numpy array"):
        load_image([[1, 2], [3, 4]])
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image("nowhere.jpg")


def test_results_serialise_with_json(bundled):
    face = bundled.predict(PHOTO)[0]
    record = json.loads(json.dumps(face.to_dict()))
    assert record["box"] == dict(zip("xywh", face.box, strict=True)) and record["emotion"] == face.emotion
    assert set(record["probabilities"]) == set(bundled.class_names)
    assert record["confidence"] == pytest.approx(max(record["probabilities"].values()), abs=1e-6)
    assert 0.5 < record["detection_score"] <= 1 and len(record["landmarks"]) == 5  # YuNet, the default
    assert face.confidence == pytest.approx(face.probabilities[face.emotion])


def test_every_entry_point_gives_the_same_faces(bundled, tmp_path, capsys):
    python = _summary(bundled.predict(PHOTO))
    assert main(["image", str(PHOTO), "--out", str(tmp_path / "a.jpg")]) == 0
    printed = re.findall(r"box \(x=(\d+), y=(\d+), w=(\d+), h=(\d+)\) -> (\w+)", capsys.readouterr().out)
    assert [(tuple(map(int, m[:4])), m[4]) for m in printed] == python
    assert main(["predict", str(PHOTO), "--output", str(tmp_path / "faces.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    assert [(tuple(r["box"].values()), r["emotion"]) for r in rows] == python
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ferkit.serve.app import create_app
    from ferkit.serve.config import ServiceConfig

    client = TestClient(create_app(ServiceConfig(device="cpu")), base_url="http://127.0.0.1")
    response = client.post("/v1/predict", files={"file": ("photo.jpg", PHOTO.read_bytes(), "image/jpeg")})
    assert response.status_code == 200
    served = response.json()["faces"]
    assert [(tuple(f["box"].values()), f["emotion"]) for f in served] == python
    assert served[0] == {k: v for k, v in rows[0].items() if k not in ("file", "face")}  # one dict for a face


def test_bundled_models_by_name():
    from ferkit.infer.models import MODELS, resolve_model

    assert resolve_model() == resolve_model("fast") == MODELS["fast"].weights
    assert EmotionPredictor("fast", device="cpu").checkpoint_path == MODELS["fast"].weights
    with pytest.raises(ValueError, match="does not ship with this version"):
        EmotionPredictor(model="accurate")
    assert main(["image", "--model", "accurate"]) == 2


def test_the_expired_import_path_is_gone():
    """``ferkit.inference`` (0.1's path) and ``FacePrediction`` (0.1's name) were kept from 0.2 "for one
    release" and went in 0.5 (CHANGELOG.md)."""
    import importlib

    import ferkit

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("ferkit.inference")
    assert not hasattr(ferkit, "FacePrediction") and ferkit.EmotionPredictor is EmotionPredictor


def test_one_decoding_policy_refuses_truncated_files(tmp_path, face_image, random_checkpoint, capsys):
    """A truncated JPEG or PNG is refused by name everywhere (it used to be scored half grey by the
    CLI and Python while the service refused it), and a whole one still reads."""
    for suffix in (".jpg", ".png"):
        whole = cv2.imencode(suffix, face_image)[1].tobytes()
        assert decode_image(whole, "whole").shape == face_image.shape
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole[: len(whole) * 2 // 3])
        with pytest.raises(ImageError, match=f"{cut}: not a readable image \\(truncated"):
            load_image(cut)
        assert main(["predict", str(cut), "--model", str(random_checkpoint)]) == 1
        assert f"{cut}: not a readable image (truncated" in capsys.readouterr().err
    with_trailer = cv2.imencode(".jpg", face_image)[1].tobytes() + b"\0" * 300  # bytes after the end marker
    assert decode_image(with_trailer, "trailer").shape == face_image.shape


def test_the_original_api_gives_a_detected_face_its_own_probabilities():
    """``predict_emotion_from_frame(image, face.box, face.landmarks)`` frames the face as ``predict``
    did (aligned), and ``(image, face.box)`` crops the box as a predictor that does not align does
    (the default detector's margin), so the two APIs agree on the same face."""
    image = cv2.imread(str(EXAMPLES_DIR / "obama.jpg"))
    for align in (True, False):
        predictor = EmotionPredictor(align=align)
        face = predictor.predict(image)[0]
        emotion, index, probabilities = predictor.predict_emotion_from_frame(image, face.box, face.landmarks)
        assert (emotion, index) == (face.emotion, face.index)
        np.testing.assert_allclose(probabilities, face.scores, atol=1e-6)
        if not align:
            np.testing.assert_allclose(predictor.predict_emotion_from_frame(image, face.box)[2], face.scores,
                                       atol=1e-6)
