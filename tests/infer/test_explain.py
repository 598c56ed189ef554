"""Explanations: Grad-CAM and occlusion maps, their sanity checks (Adebayo et al. 2018), the CLI."""

import cv2
import numpy as np
import pytest
import torch

from ferkit.apps.media import EXAMPLES_DIR
from ferkit.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ferkit.cli import main
from ferkit.infer.explain import draw_explanations
from ferkit.infer.predictor import EmotionPredictor
from ferkit.model import create_model

METHODS = ("gradcam", "occlusion")


@pytest.fixture(scope="module")
def trained() -> EmotionPredictor:
    return EmotionPredictor(backend="torch")  # the bundled model


@pytest.fixture(scope="module")
def reinitialised(trained, tmp_path_factory) -> EmotionPredictor:
    """The bundled model's architecture with random weights: what a map must not look like."""
    config = load_checkpoint(trained.checkpoint_path)["model_config"]
    torch.manual_seed(0)
    model = create_model(config["num_classes"], stem=config["stem"], fine_to_class=config.get("fine_to_class"))
    path = tmp_path_factory.mktemp("random") / "random.pth"
    save_atomic(make_checkpoint(model, epoch=0, val_accuracy=0.0, config={}), path)
    return EmotionPredictor(path, backend="torch")


def _photo(name):
    return cv2.imread(str(EXAMPLES_DIR / name))


@pytest.mark.parametrize("method", METHODS)
def test_maps_are_one_per_face_and_normalised(trained, method, face_image):
    explanations = trained.explain(face_image, method)
    faces = trained.predict(face_image)
    assert [e.face.box for e in explanations] == [f.box for f in faces]
    for e in explanations:
        assert e.method == method and e.heatmap.shape == (48, 48) and e.heatmap.dtype == np.float32
        assert e.heatmap.min() == 0 and e.heatmap.max() == pytest.approx(1)
        x, y, side, _ = e.crop  # the square the network saw contains the face's centre
        bx, by, bw, bh = e.face.box
        assert x <= bx + bw / 2 <= x + side and y <= by + bh / 2 <= y + side
    drawn = draw_explanations(face_image, explanations)
    assert drawn.shape == face_image.shape and (drawn != face_image).any()


@pytest.mark.parametrize("method", METHODS)
def test_a_randomly_reinitialised_model_gives_other_maps(trained, reinitialised, method):
    """Model-parameter randomisation: a method whose map survives losing the weights explains nothing."""
    for name in ("obama.jpg", "astronaut.png"):
        a, b = trained.explain(_photo(name), method)[0], reinitialised.explain(_photo(name), method)[0]
        assert a.face.box == b.face.box
        rank = [np.argsort(np.argsort(m.heatmap.ravel())) for m in (a, b)]
        assert np.corrcoef(*rank)[0, 1] < 0.6, f"{method} on {name}: the random model's map is the trained one's"


@pytest.mark.parametrize("method", METHODS)
def test_the_map_moves_with_the_face(trained, method):
    portrait = _photo("astronaut.png")
    face = cv2.resize(portrait[20:260, 120:330], (210, 240))
    centres = []
    for x0, y0 in ((40, 60), (300, 180)):
        scene = np.full((480, 640, 3), 120, np.uint8)
        scene[y0 : y0 + 240, x0 : x0 + 210] = face
        (e,) = trained.explain(scene, method)
        weights = e.heatmap / e.heatmap.sum()
        ys, xs = np.mgrid[0:48, 0:48] + 0.5
        centres.append(e.to_frame((xs * weights).sum(), (ys * weights).sum()))
    moved = np.subtract(centres[1], centres[0])
    assert np.abs(moved - (260, 120)).max() < 24  # a tenth of the face's height


def test_gradcam_needs_weights_and_occlusion_runs_anywhere(random_checkpoint, tmp_path, face_image):
    pytest.importorskip("onnxruntime")
    from ferkit.infer.export import export_onnx

    onnx_only = EmotionPredictor(export_onnx(random_checkpoint, tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="Grad-CAM needs PyTorch weights"):
        onnx_only.explain(face_image, "gradcam")
    assert [e.method for e in onnx_only.explain(face_image)] == ["occlusion"]  # auto falls back
    onnx_backend = EmotionPredictor(random_checkpoint, backend="onnx")  # a checkpoint run by ONNX Runtime
    assert [e.method for e in onnx_backend.explain(face_image)] == ["gradcam"]
    with pytest.raises(ValueError, match="method must be one of"):
        onnx_backend.explain(face_image, "lime")


def test_explain_command_writes_the_overlay(tmp_path, capsys):
    out = tmp_path / "why.jpg"
    assert main(["explain", str(EXAMPLES_DIR / "obama.jpg"), "--out", str(out), "--method", "occlusion"]) == 0
    printed = capsys.readouterr().out
    assert "occlusion map strongest at" in printed and cv2.imread(str(out)) is not None
