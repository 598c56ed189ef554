"""Test-time views and the one way their outputs are averaged: the predictor, evaluation (both of its
paths), calibration and training's temperature all give the same probabilities for the same logits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferkit.calibration import fit_view_temperature, raw_logits
from ferkit.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ferkit.data import load_fer2013
from ferkit.defaults import TTA_MODES
from ferkit.evaluation import evaluate_checkpoint, predict_logits
from ferkit.infer.backends import load_classifier
from ferkit.infer.predictor import EmotionPredictor
from ferkit.model import create_model
from ferkit.views import average_views, num_views, tta_views, view_logits


def test_tta_views():
    x = torch.arange(2 * 48 * 48, dtype=torch.float32).reshape(2, 1, 48, 48)
    counts = {"none": 1, "flip": 2, "tencrop": 10, "tencrop_full": 12, "multiscale": 22}
    assert set(counts) == set(TTA_MODES)
    for mode, count in counts.items():
        views = tta_views(x, mode)
        assert len(views) == count and all(v.shape == x.shape for v in views)
        half = count // 2
        if mode != "none":  # the second half mirrors the first
            assert all(torch.equal(m, v.flip(-1)) for v, m in zip(views[:half], views[half:], strict=True))

    def resized(top: int, left: int, side: int) -> torch.Tensor:
        return F.interpolate(x[..., top : top + side, left : left + side], size=(48, 48), mode="bilinear")

    tencrop = tta_views(x, "tencrop")
    assert torch.equal(tencrop[1], resized(0, 4, 44)) and torch.equal(tencrop[4], resized(2, 2, 44))
    multiscale = tta_views(x, "multiscale")
    assert torch.equal(multiscale[0], x) and torch.equal(multiscale[5], resized(1, 1, 46))
    assert all(torch.equal(a, b) for a, b in zip(multiscale[6:11], tencrop[:5], strict=True))
    assert torch.equal(tta_views(x, "tencrop_full")[0], x)
    with pytest.raises(ValueError, match="tta must be one of"):
        tta_views(x, "fivecrop")
    # the scores average the views' probabilities: a model blind to position scores every mode alike
    images = torch.randint(0, 256, (5, 1, 48, 48), dtype=torch.uint8)
    mean_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 3))
    with torch.no_grad():
        mean_model[1].weight.fill_(1e-3)
    plain = predict_logits(mean_model, images, tta="none").log_softmax(1)
    assert torch.allclose(predict_logits(mean_model, images, tta="flip"), plain, atol=1e-5)


    assert [num_views(m) for m in counts] == list(counts.values())


def test_average_views_divides_each_view_by_the_temperature_then_averages():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(3, 50, 4))
    expected = np.mean([np.exp(v / 2) / np.exp(v / 2).sum(1, keepdims=True) for v in logits], axis=0)
    np.testing.assert_allclose(average_views(logits, 2.0), expected, rtol=1e-12)
    assert average_views(logits, 2.0).dtype == np.float64
    one_view = np.exp(logits[0] / 2) / np.exp(logits[0] / 2).sum(1, keepdims=True)  # (N, K): its softmax
    np.testing.assert_allclose(average_views(torch.from_numpy(logits[0]), 2.0).numpy(), one_view, rtol=1e-12)
    # not the softmax of the averaged log-probabilities divided by T (what evaluation did before 0.5)
    wrong = F.softmax(torch.from_numpy(np.log(average_views(logits)) / 2.0), 1).numpy()
    assert not np.allclose(wrong, expected, atol=1e-3)
    images = torch.randint(0, 256, (7, 1, 48, 48), dtype=torch.uint8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 3))
    per_view = view_logits(model, images, "tencrop_full", batch_size=3)
    assert per_view.shape == (12, 7, 3)
    with torch.no_grad():
        first = model(tta_views(images.float() / 255, "tencrop_full")[5])
    torch.testing.assert_close(per_view[5], first)


@pytest.fixture
def warm_checkpoint(tmp_path):
    """A random fine-label model with a temperature far from 1 and sharp logits (so that getting the
    order of dividing and averaging wrong shows)."""
    torch.manual_seed(0)
    model = create_model(4, fine_to_class=[0, 0, 1, 2, 1, 3, 3])
    with torch.no_grad():
        model.fc.weight.mul_(40)
    path = tmp_path / "warm.pth"
    ckpt = make_checkpoint(model, epoch=1, val_accuracy=0.0, config={"tta": "flip", "precision": "fp32"})
    ckpt["temperature"] = 2.5
    save_atomic(ckpt, path)
    return path


def test_the_same_logits_give_the_same_probabilities_everywhere(warm_checkpoint, fer_csv):
    arrays = load_fer2013(fer_csv)
    pixels, _ = arrays.split("PublicTest")
    predictor = EmotionPredictor(warm_checkpoint, backend="torch", device="cpu", tta="flip")
    served = predictor.predict_crops(list(pixels))
    model = load_classifier(warm_checkpoint, "torch").model
    images = torch.from_numpy(pixels).unsqueeze(1)
    evaluated = predict_logits(model, images, tta="flip", temperature=2.5).exp().numpy()
    calibrated = average_views(raw_logits(predictor.classifier, pixels, "flip"), 2.5)
    np.testing.assert_allclose(evaluated, served, atol=1e-5)
    np.testing.assert_allclose(calibrated, served, atol=1e-5)
    # both of evaluate_checkpoint's paths (as trained, and as EmotionPredictor runs it) agree on how sure they are
    as_trained = evaluate_checkpoint(warm_checkpoint, fer_csv, "PublicTest", device="cpu", tta="flip")
    as_served = evaluate_checkpoint(warm_checkpoint, fer_csv, "PublicTest", device="cpu", tta="flip", backend="torch")
    assert as_trained["calibration"]["nll"] == pytest.approx(as_served["calibration"]["nll"], abs=1e-5)
    assert as_trained["calibration"]["ece"] == pytest.approx(as_served["calibration"]["ece"], abs=1e-5)
    # one temperature fit: training's and `ferkit calibrate`'s call the same function on the same views
    y = np.arange(len(pixels)) % 4
    fitted = fit_view_temperature(model, images, y, "flip")
    assert fitted == fit_view_temperature(lambda x: torch.from_numpy(predictor.classifier.logits(x.numpy())),
                                          images, y, "flip")
    assert load_checkpoint(warm_checkpoint)["temperature"] == 2.5
