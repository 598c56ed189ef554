"""Temperature scaling, calibration metrics, abstention: fitted, stored, applied everywhere."""

import json

import numpy as np
import pytest
import torch

from ferkit.calibration import (
    calibrate_model,
    calibration_metrics,
    ece_floor,
    fit_temperature,
    nll,
    risk_coverage,
    training_log_prior,
)
from ferkit.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_atomic
from ferkit.cli import main
from ferkit.infer.backends import load_classifier, onnxruntime_available
from ferkit.infer.export import export_onnx, set_onnx_temperature
from ferkit.infer.predictor import EmotionPredictor
from ferkit.views import average_views

needs_onnx = pytest.mark.skipif(not onnxruntime_available(), reason="onnx / onnxruntime not installed")


def _sampled(temperature: float, n: int = 20000, k: int = 4, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature): calibrated at that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, k))
    p = np.exp(logits / temperature)
    p /= p.sum(1, keepdims=True)
    labels = (rng.random((n, 1)) > p.cumsum(1)).sum(1)  # inverse-CDF sampling, one draw per row
    return logits, labels, p


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at(true_temperature):
    logits, labels, _ = _sampled(true_temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.08)
    assert nll(logits, labels, fitted) <= nll(logits, labels, 1.0) + 1e-9
    soft = np.eye(4)[labels]  # soft targets give the same answer as their indices
    assert fit_temperature(logits, soft) == pytest.approx(fitted, rel=1e-3)


def test_with_test_time_views_the_fit_is_for_their_mean():
    rng = np.random.default_rng(1)
    views = rng.normal(0, 3, size=(2, 20000, 4))  # two views of each face that disagree a little
    views[1] = views[0] + rng.normal(0, 2, size=views[0].shape)
    p = average_views(views, 1.5)  # labels drawn from the views' mean at T = 1.5
    labels = (rng.random((len(p), 1)) > p.cumsum(1)).sum(1)
    assert fit_temperature(views, labels) == pytest.approx(1.5, rel=0.08)
    # each view alone looks overconfident at 1.5 (a mean of views is less sure than either), so a fit
    # on one view asks for more temperature: the one-view fit would leave the mean underconfident
    assert fit_temperature(views[0], labels) > 1.6
    assert np.allclose(average_views(views[:1], 2.0), average_views(views[0], 2.0))
    assert nll(views[:1], labels, 2.0) == pytest.approx(nll(views[0], labels, 2.0))


def test_calibration_metrics_tell_honest_from_overconfident():
    logits, labels, honest = _sampled(1.0)
    sure = np.exp(logits * 3)
    sure /= sure.sum(1, keepdims=True)
    good, bad = calibration_metrics(honest, labels), calibration_metrics(sure, labels)
    assert good["ece"] < 0.02 < 0.1 < bad["ece"]
    assert good["nll"] < bad["nll"] and good["brier"] < bad["brier"]
    assert good["accuracy"] == bad["accuracy"]  # same argmax
    assert sum(b["faces"] for b in good["bins"]) == len(labels)
    # a tiny case by hand: two faces, one right at 0.8, one wrong at 0.6
    m = calibration_metrics(np.array([[0.8, 0.2], [0.6, 0.4]]), np.array([0, 1]))
    assert m["accuracy"] == 0.5 and m["mean_confidence"] == pytest.approx(0.7)
    assert m["ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.6)
    assert m["nll"] == pytest.approx(-(np.log(0.8) + np.log(0.4)) / 2)
    assert m["brier"] == pytest.approx((0.04 + 0.04 + 0.36 + 0.36) / 2)


def test_ece_floor_is_the_noise_of_a_calibrated_model():
    logits, labels, honest = _sampled(1.0)
    sure = np.exp(logits * 3)
    sure /= sure.sum(1, keepdims=True)
    floor = ece_floor(honest[:500], draws=50)
    assert 0 < floor["median"] <= floor["p95"] < 0.1
    assert calibration_metrics(sure[:500], labels[:500])["ece"] > floor["p95"]  # overconfidence shows above it
    assert ece_floor(honest, draws=50)["median"] < floor["median"]  # more faces, less noise
    assert ece_floor(honest[:500], draws=50) == floor  # seeded


def test_risk_coverage_keeps_the_most_confident():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    rows = risk_coverage(p, np.array([0, 0, 1, 1]), coverages=(1.0, 0.5))
    assert rows[0] == {"coverage": 1.0, "accuracy": 0.5, "min_confidence": 0.55}
    assert rows[1] == {"coverage": 0.5, "accuracy": 1.0, "min_confidence": 0.8}


def _with_temperature(checkpoint, tmp_path, temperature):
    ckpt = load_checkpoint(checkpoint)
    ckpt["temperature"] = temperature
    path = tmp_path / f"t{temperature}.pth"
    save_atomic(ckpt, path)
    return path


def test_the_temperature_travels_with_the_model_and_is_applied(random_checkpoint, tmp_path, face_image):
    hot = _with_temperature(random_checkpoint, tmp_path, 4.0)
    plain = EmotionPredictor(random_checkpoint, device="cpu", backend="torch")
    scaled = EmotionPredictor(hot, device="cpu", backend="torch")
    assert scaled.classifier.temperature == 4.0
    batch = np.random.default_rng(0).random((3, 1, 48, 48), dtype=np.float32)
    np.testing.assert_allclose(scaled.classifier(batch), plain.classifier(batch) / 4, rtol=1e-5, atol=1e-6)
    a, b = plain.predict(face_image)[0], scaled.predict(face_image)[0]
    assert a.index == b.index and a.emotion == b.emotion and b.confidence < a.confidence
    for bad in (float("nan"), -1.0, 0.0, "2"):
        with pytest.raises(CheckpointError, match="temperature"):
            load_checkpoint(_with_temperature(random_checkpoint, tmp_path, bad))


@needs_onnx
def test_onnx_exports_carry_the_temperature(random_checkpoint, tmp_path):
    hot = _with_temperature(random_checkpoint, tmp_path, 2.0)
    onnx_path = export_onnx(hot, tmp_path / "hot.onnx")
    onnx = load_classifier(onnx_path, "onnx")
    torch_ = load_classifier(hot, "torch", torch.device("cpu"))
    batch = np.random.default_rng(1).random((2, 1, 48, 48), dtype=np.float32)
    assert onnx.temperature == 2.0
    np.testing.assert_allclose(onnx(batch), torch_(batch), rtol=1e-3, atol=1e-4)
    set_onnx_temperature(onnx_path, tmp_path / "cool.onnx", 0.5)
    cool = load_classifier(tmp_path / "cool.onnx", "onnx")
    assert cool.temperature == 0.5 and cool.class_names == onnx.class_names
    np.testing.assert_allclose(cool(batch), onnx.logits(batch) / 0.5, rtol=1e-5)


def test_calibrate_fits_on_public_test_and_writes_a_copy(random_checkpoint, fer_csv, tmp_path, capsys):
    out = tmp_path / "calibrated.pth"
    assert main(["calibrate", str(random_checkpoint), "--data", str(fer_csv), "--out", str(out)]) == 0
    temperature = load_checkpoint(out)["temperature"]
    assert f"temperature {temperature:g}" in capsys.readouterr().out
    assert load_checkpoint(random_checkpoint)["temperature"] == 1.0  # the original is untouched
    again, path = calibrate_model(random_checkpoint, fer_csv, tmp_path / "again.pth")
    assert again == temperature and path == tmp_path / "again.pth"


def test_logit_adjustment_takes_the_training_prior_off_the_bias_and_ships_in_the_weights(
    random_checkpoint, fer_csv, tmp_path, capsys
):
    from ferkit.data import load_fer2013
    from ferkit.infer.export import export_weights

    out = tmp_path / "adjusted.pth"
    assert main(["calibrate", str(random_checkpoint), "--data", str(fer_csv), "--out", str(out),
                 "--logit-adjustment", "0.5"]) == 0
    assert "logit adjustment tau 0.5, temperature" in capsys.readouterr().out
    before, after = load_checkpoint(random_checkpoint), load_checkpoint(out)
    model = model_from_checkpoint(before)
    log_prior = training_log_prior(load_fer2013(fer_csv), model)
    assert log_prior.shape == model.fc.bias.shape and torch.all(log_prior < 0)
    shift = after["model_state_dict"]["fc.bias"] - before["model_state_dict"]["fc.bias"]
    torch.testing.assert_close(shift, -0.5 * log_prior)  # rarer labels gain the most
    assert after["logit_adjustment"]["tau"] == 0.5 and "logit_adjustment" not in before
    assert all(torch.equal(after["model_state_dict"][k], v) for k, v in before["model_state_dict"].items()
               if k != "fc.bias")
    shipped = load_checkpoint(export_weights(out, tmp_path / "adjusted_fp16.pt"))  # kept by the fp16 export
    assert shipped["logit_adjustment"]["tau"] == 0.5 and shipped["temperature"] == after["temperature"]
    # twice, into the checkpoint itself (no --out), or with a tau out of range: refused, nothing written
    assert main(["calibrate", str(out), "--data", str(fer_csv), "--out", str(tmp_path / "twice.pth"),
                 "--logit-adjustment", "0.5"]) == 2
    assert main(["calibrate", str(random_checkpoint), "--data", str(fer_csv), "--logit-adjustment", "0.5"]) == 2
    assert main(["calibrate", str(random_checkpoint), "--data", str(fer_csv), "--out", str(tmp_path / "x.pth"),
                 "--logit-adjustment", "-1"]) == 2
    err = capsys.readouterr().err
    assert "already adjusted (tau 0.5)" in err and "say where the adjusted copy goes" in err and "(0, 2]" in err
    # a tau out of range is refused before the data is read: the error names tau, not the missing file
    assert main(["calibrate", str(random_checkpoint), "--data", str(tmp_path / "missing.csv"), "--out",
                 str(tmp_path / "x.pth"), "--logit-adjustment", "3"]) == 2
    err = capsys.readouterr().err
    assert "(0, 2], got 3" in err and "missing.csv" not in err
    assert not (tmp_path / "twice.pth").exists() and not (tmp_path / "x.pth").exists()
    assert load_checkpoint(random_checkpoint)["temperature"] == 1.0


def test_min_confidence_abstains_without_changing_the_numbers(random_checkpoint, face_image):
    plain = EmotionPredictor(random_checkpoint, device="cpu", backend="torch")
    wary = EmotionPredictor(random_checkpoint, device="cpu", backend="torch", min_confidence=0.999)
    a, b = plain.predict(face_image)[0], wary.predict(face_image)[0]
    assert b.emotion == "uncertain" and a.emotion != "uncertain"
    assert b.index == a.index and b.confidence == a.confidence and b.probabilities == a.probabilities
    assert json.loads(json.dumps(b.to_dict()))["emotion"] == "uncertain"
    emotion, index, _ = wary.predict_emotion_from_frame(face_image, b.box)
    assert (emotion, index) == ("uncertain", a.index)
    with pytest.raises(ValueError, match="min_confidence"):
        EmotionPredictor(random_checkpoint, min_confidence=1.5)


def test_evaluate_reports_calibration_and_risk_coverage(random_checkpoint, fer_csv, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(random_checkpoint), "--data", str(fer_csv), "--out", str(out),
                 "--backend", "torch", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ECE" in printed and "coverage" in printed
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["calibration"]) >= {"ece", "nll", "brier", "bins"}
    assert [r["coverage"] for r in record["risk_coverage"]] == [1.0, 0.9, 0.75, 0.5]
    assert (out / "reliability.png").stat().st_size > 1000
