import json

import numpy as np
import pytest
import torch

from ferkit.checkpoint import CheckpointError, load_checkpoint, make_checkpoint, model_from_checkpoint, save_atomic
from ferkit.infer.backends import OnnxClassifier
from ferkit.infer.export import export_onnx, export_torchscript
from ferkit.infer.predictor import EmotionPredictor
from ferkit.model import create_model

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_model(random_checkpoint, tmp_path_factory):
    return export_onnx(random_checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_onnx_agrees_with_pytorch(random_checkpoint, onnx_model):
    model = model_from_checkpoint(load_checkpoint(random_checkpoint), random_checkpoint).eval()
    classifier = OnnxClassifier(onnx_model)
    assert classifier.class_names == ("angry", "sad", "happy", "neutral") and classifier.name == "onnxruntime"
    for batch in (1, 7, 64):  # the batch dimension is dynamic
        x = np.random.default_rng(batch).random((batch, 1, 48, 48), dtype=np.float32)
        with torch.no_grad():
            expected = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
        got = torch.softmax(torch.from_numpy(classifier(x)), 1).numpy()
        assert got.shape == (batch, 4) and np.abs(got - expected).max() < 1e-4


def test_predictor_backends_agree(random_checkpoint, onnx_model, face_image):
    box = (215, 120, 210, 240)
    torch_probs = EmotionPredictor(random_checkpoint, device="cpu", backend="torch").predict_emotion_from_frame(
        face_image, box)[2]
    via_cache = EmotionPredictor(random_checkpoint, device="cpu", backend="onnx")  # exported once, cached
    via_file = EmotionPredictor(onnx_model, device="cpu")
    assert via_cache.backend == via_file.backend == "onnxruntime"
    for predictor in (via_cache, via_file):
        assert np.abs(predictor.predict_emotion_from_frame(face_image, box)[2] - torch_probs).max() < 1e-4


def test_unwritable_cache_costs_an_export_not_the_run(random_checkpoint, face_image, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(blocker / "cache"))  # under a file: nothing can be written
    predictor = EmotionPredictor(random_checkpoint, device="cpu", backend="onnx")
    assert predictor.backend == "onnxruntime" and "exporting it for this run only" in capsys.readouterr().err
    assert predictor.predict_emotion_from_frame(face_image, (215, 120, 210, 240))[2].shape == (4,)


def test_int8_export(random_checkpoint, onnx_model, tmp_path):
    faces = np.random.default_rng(0).integers(0, 256, (96, 48, 48), dtype=np.uint8)
    path = export_onnx(random_checkpoint, tmp_path / "int8.onnx", calibration=faces)
    classifier = OnnxClassifier(path)
    assert classifier.name == "onnxruntime-int8"
    assert path.stat().st_size < 0.35 * onnx_model.stat().st_size  # about a quarter of fp32
    assert classifier(faces[:5, None].astype(np.float32) / 255).shape == (5, 4)
    assert int8_weight_range(path) == (-64, 64)
    with pytest.raises(ValueError, match="calibration faces must be"):
        export_onnx(random_checkpoint, tmp_path / "bad.onnx", calibration=np.zeros((4, 32, 32), np.uint8))


def int8_weight_range(path) -> tuple[int, int]:
    """The smallest and largest value of an ONNX model's int8 weight tensors."""
    import onnx
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and np.prod(t.dims) > 1]
    return int(min(w.min() for w in weights)), int(max(w.max() for w in weights))


@pytest.mark.parametrize("name", ["fast", "fast7"])
def test_bundled_int8_weights_fit_in_7_bits(name):
    # CPUs with AVX2 and no VNNI saturate uint8 x int8 products of full-range weights (export.py)
    from ferkit.infer.models import MODELS

    assert int8_weight_range(MODELS[name].onnx) == (-64, 64)


def test_bundled_int8_export_matches_bundled_model(face_image):
    onnx = EmotionPredictor(device="cpu")
    reference = EmotionPredictor(device="cpu", backend="torch")
    assert onnx.backend == "onnxruntime-int8" and reference.backend == "torch"
    box = (215, 120, 210, 240)
    assert np.abs(onnx.predict_emotion_from_frame(face_image, box)[2]
                  - reference.predict_emotion_from_frame(face_image, box)[2]).max() < 0.1


def test_torchscript_export(random_checkpoint, tmp_path):
    path = export_torchscript(random_checkpoint, tmp_path / "model.torchscript")
    files = {"class_names.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=files)
    assert json.loads(files["class_names.json"]) == ["angry", "sad", "happy", "neutral"]
    model = model_from_checkpoint(load_checkpoint(random_checkpoint), random_checkpoint).eval()
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


def test_bad_onnx_files(tmp_path, random_checkpoint):
    (tmp_path / "junk.onnx").write_bytes(b"\x00not protobuf" * 10)
    with pytest.raises(CheckpointError, match="junk.onnx: not a loadable ONNX model"):
        EmotionPredictor(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError):
        OnnxClassifier(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="runs on the onnx backend"):
        EmotionPredictor(tmp_path / "junk.onnx", backend="torch")
    with pytest.raises(ValueError, match="unknown backend"):
        EmotionPredictor(random_checkpoint, backend="tensorrt")


def test_onnx_with_another_class_count_is_refused(onnx_model):
    seven = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    with pytest.raises(CheckpointError, match="not one score for each of the 7 classes"):
        OnnxClassifier(onnx_model, class_names=seven)


def test_evaluate_an_onnx_export(onnx_model, fer_csv):
    from ferkit.evaluation import evaluate_checkpoint

    record = evaluate_checkpoint(onnx_model, fer_csv, "PrivateTest")
    assert record["num_samples"] == 32 and record["backend"] == "onnxruntime" and record["precision"] == "fp32"
    assert 0 <= record["accuracy"] <= 1


def test_fine_label_model_exports(tmp_path):
    """A model fitted on the 7 labels and merged into 4 classes exports with its merge."""
    torch.manual_seed(0)
    model = create_model(4, fine_to_class=[0, 0, 1, 2, 1, 3, 3]).eval()
    path = tmp_path / "fine.pth"
    save_atomic(make_checkpoint(model, epoch=0, val_accuracy=0.0, config={}), path)
    x = torch.rand(5, 1, 48, 48)
    with torch.no_grad():
        expected = model(x).softmax(1)
    onnx_scores = OnnxClassifier(export_onnx(path, tmp_path / "fine.onnx"))(x.numpy())
    assert (torch.from_numpy(onnx_scores).softmax(1) - expected).abs().max() < 1e-4
    scripted = torch.jit.load(str(export_torchscript(path, tmp_path / "fine.torchscript")))
    with torch.no_grad():
        assert torch.allclose(scripted(x).softmax(1), expected, atol=1e-5)


def test_an_equalizing_model_exports_with_its_equalization(tmp_path):
    torch.manual_seed(0)
    model = create_model(4, equalize=True).eval()
    path = tmp_path / "eq.pth"
    save_atomic(make_checkpoint(model, epoch=0, val_accuracy=0.0, config={}), path)
    x = torch.rand(6, 1, 48, 48) * 0.6 + 0.2
    with torch.no_grad():
        expected = model(x).softmax(1)
    onnx_scores = OnnxClassifier(export_onnx(path, tmp_path / "eq.onnx"))(x.numpy())
    assert (torch.from_numpy(onnx_scores).softmax(1) - expected).abs().max() < 1e-4
    int8 = OnnxClassifier(export_onnx(path, tmp_path / "eq8.onnx", calibration=(x[:, 0].numpy() * 255).astype("uint8")))
    assert int8(x.numpy()).shape == (6, 4)
    # the equalization stays in float: its histogram and cumulative counts (up to 2,304) lose their precision in 8 bits
    import onnx

    graph = onnx.load(str(tmp_path / "eq8.onnx")).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    quantized = {made_by.get(node.input[0], "input") for node in graph.node if node.op_type == "QuantizeLinear"}
    assert quantized.isdisjoint({"ScatterElements", "CumSum", "GatherElements", "input"})
    assert "Conv" in quantized or "Relu" in quantized  # the network itself is int8
