import numpy as np
import pytest

from ferkit.infer.models import MODELS
from ferkit.infer.predictor import EmotionPredictor, Face, crop_face, detect_faces, to_gray


@pytest.fixture(scope="module")
def predictor(random_checkpoint):
    return EmotionPredictor(random_checkpoint, device="cpu")


def test_predict_emotion_from_frame_api(predictor, face_image):
    emotion, index, probs = predictor.predict_emotion_from_frame(face_image, (215, 120, 210, 240))
    assert isinstance(emotion, str) and isinstance(index, int) and isinstance(probs, np.ndarray)
    assert probs.shape == (4,) and abs(probs.sum() - 1) < 1e-5 and emotion == predictor.class_names[index]
    assert index == int(probs.argmax())


def test_batched_faces_match_single(predictor, face_image):
    boxes = [(215, 120, 210, 240), (10, 10, 60, 60), (600, 440, 80, 80)]  # the last one crosses the edge
    batched = predictor.predict_faces(face_image, boxes)
    for box, (emotion, index, probs) in zip(boxes, batched, strict=True):
        e, i, p = predictor.predict_emotion_from_frame(face_image, box)
        assert (e, i) == (emotion, index) and np.allclose(p, probs, atol=1e-5)


def test_predict_crops_any_size(predictor):
    faces = [np.full((48, 48), 128, np.uint8), np.zeros((100, 80), np.uint8), np.ones((20, 20, 3), np.uint8)]
    probs = predictor.predict_crops(faces)
    assert probs.shape == (3, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert predictor.predict_crops([]).shape == (0, 4)


def test_detects_the_face(face_image):
    boxes = detect_faces(face_image)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 215 <= x + w / 2 <= 425 and 120 <= y + h / 2 <= 360


def test_predict_frame(predictor, face_image):
    faces = predictor.predict_frame(face_image)
    assert len(faces) == 1 and isinstance(faces[0], Face)
    assert predictor.predict_frame(np.full((240, 320, 3), 127, np.uint8)) == []


def test_frame_layouts(face_image):
    gray = to_gray(face_image)
    assert gray.shape == (480, 640) and gray.dtype == np.uint8
    bgra = np.dstack([face_image, np.full((480, 640), 255, np.uint8)])
    assert np.array_equal(to_gray(bgra), gray)
    assert np.array_equal(to_gray(gray[..., None]), gray)
    assert np.abs(to_gray(gray.astype(np.uint16) * 257).astype(int) - gray).max() <= 1
    assert np.abs(to_gray(gray / 255.0).astype(int) - gray).max() <= 1


@pytest.mark.parametrize(
    "frame, error",
    [
        (np.zeros((0, 0, 3), np.uint8), "empty frame"),
        (np.zeros((10, 10, 2), np.uint8), "not an image"),
        (np.zeros((10, 10), np.int64), "dtype int64"),
        ([[1, 2]], "numpy array"),
    ],
)
def test_bad_frames(predictor, frame, error):
    with pytest.raises((ValueError, TypeError), match=error):
        predictor.predict_emotion_from_frame(frame, (0, 0, 5, 5))


@pytest.mark.parametrize("box, error", [((10, 10, 0, 20), "zero or negative"), ((700, 10, 20, 20), "outside")])
def test_bad_boxes(predictor, face_image, box, error):
    with pytest.raises(ValueError, match=error):
        predictor.predict_emotion_from_frame(face_image, box)


def test_crop_is_square_with_margin():
    gray = np.zeros((100, 100), np.uint8)
    gray[40:60, 40:60] = 255
    crop = crop_face(gray, (40, 40, 20, 20), margin=0.5)  # side 40 around a 20 px square
    assert crop.shape == (48, 48)
    assert crop[24, 24] == 255 and crop[2, 2] == 0


def test_bundled_model_loads():
    predictor = EmotionPredictor(device="cpu")
    assert predictor.class_names == ("angry", "sad", "happy", "neutral")
    assert predictor.checkpoint_path.stat().st_size < 25 * 2**20


@pytest.mark.parametrize("name", list(MODELS))
def test_every_bundled_model_ships_whole(name, face_image):
    """Weights and int8 export under 25 MB each, a card that names it, its figures and its temperatures,
    both backends agree."""
    import json

    model = MODELS[name]
    assert model.weights.stat().st_size < 25 * 2**20 and model.onnx.stat().st_size < 25 * 2**20
    card = json.loads(model.card.read_text())
    assert card["name"] == name and 0.5 < card["accuracy"]["onnxruntime_int8"]["PrivateTest"] < 0.9
    classes = {"fast": 4, "fast7": 7}.get(name)
    onnx, torch_fp32 = (EmotionPredictor(name, device="cpu", backend=b) for b in ("onnx", "torch"))
    assert onnx.backend == "onnxruntime-int8" and len(onnx.class_names) == len(torch_fp32.class_names) == classes
    # the card was measured with the temperatures the files hold (a recalibrated file needs a new card)
    assert card["temperature"] == {"onnxruntime_int8": onnx.classifier.temperature,
                                   "pytorch_fp32": torch_fp32.classifier.temperature}
    box = (215, 120, 210, 240)
    assert np.abs(onnx.predict_emotion_from_frame(face_image, box)[2]
                  - torch_fp32.predict_emotion_from_frame(face_image, box)[2]).max() < 0.1


def test_flip_views_average_the_face_and_its_mirror(face_image):
    one, flip = EmotionPredictor(device="cpu", tta="none"), EmotionPredictor(device="cpu")  # flip: the default
    crop = to_gray(face_image)[120:360, 215:425]
    mirrored = np.ascontiguousarray(crop[:, ::-1])
    expected = (one.predict_crops([crop]) + one.predict_crops([mirrored])) / 2
    assert np.abs(flip.predict_crops([crop]) - expected).max() < 1e-5
    assert np.abs(flip.predict_crops([crop]) - flip.predict_crops([mirrored])).max() < 1e-5  # mirror-blind
    assert np.abs(one.predict_crops([crop]) - one.predict_crops([mirrored])).max() > 1e-4
    with pytest.raises(ValueError, match="tta must be one of"):
        EmotionPredictor(device="cpu", tta="mirror")
