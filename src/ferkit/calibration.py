"""How far to trust the probabilities: temperature scaling, calibration metrics, abstention.

    temperature = fit_temperature(val_logits, val_labels)  # minimises NLL on held-out faces
    report = calibration_metrics(probabilities, labels)    # ECE, NLL, Brier, reliability bins
    table = risk_coverage(probabilities, labels)           # accuracy when the least sure are left out
    calibrate_model("runs/x/fer_resnet18_best.pth", "fer2013.csv.gz")  # fit on PublicTest, store in the file
    calibrate_model(path, data, out, tau=0.5)  # first take 0.5 x log(Training prior) off the last layer's bias

A model's temperature ``T`` divides its logits before the softmax (Guo et al. 2017): it changes how
sure the model says it is, never which class one view picks (an average of views, rarely). ferkit
stores it in the checkpoint (and in an ONNX export's metadata), and both backends apply it, so every
entry point reports calibrated scores. It is fitted for the test-time views every entry point
averages (``DEFAULT_TTA``): their mean is less sure than each view alone, so a temperature fitted on
one view would leave it underconfident.

Post-hoc logit adjustment (Menon et al. 2021) changes which class is picked: ``tau * log(prior)``,
the prior being each fitted label's frequency in FER2013's Training split, is taken off the logits,
so that rare labels (disgust: 1.5% of Training) are called more often. It is a change of the last
layer's bias, so it ships inside the weights (:func:`adjust_checkpoint`), recorded in the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.defaults import DEFAULT_TTA
from ferkit.views import average_views, view_logits

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. (2017)
COVERAGES = (1.0, 0.9, 0.75, 0.5)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _targets(labels: np.ndarray, k: int) -> np.ndarray:
    """Class indices (N,) as one-hot rows, or soft targets (N, k) as they are."""
    labels = np.asarray(labels)
    return np.eye(k, dtype=np.float64)[labels] if labels.ndim == 1 else labels.astype(np.float64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` (indices, or soft targets) under softmax(logits / T);
    ``logits`` (N, K), or (V, N, K) as :func:`ferkit.views.average_views` takes them."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2:
        log_p = _log_softmax(logits / temperature)
    else:
        log_p = np.log(np.clip(average_views(logits, temperature), 1e-300, None))
    return float(-(_targets(labels, logits.shape[-1]) * log_p).sum(1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature in [low, high] that minimises the NLL of ``labels`` (golden-section search
    on log T: the NLL is smooth and has one minimum there). ``logits`` as :func:`nll` takes them."""
    if np.asarray(logits).shape[-2] == 0:
        raise ValueError("no faces to fit a temperature on")
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    while b - a > 1e-4:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return round(math.exp((a + b) / 2), 4)


def calibration_metrics(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error (top-class confidence, ``bins`` equal-width bins), negative
    log-likelihood, Brier score (summed over classes, averaged over faces), mean confidence and
    accuracy, and the reliability bins (faces, mean confidence, accuracy) the diagram draws."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if len(p) == 0:
        return {"ece": 0.0, "nll": 0.0, "brier": 0.0, "mean_confidence": 0.0, "accuracy": 0.0, "bins": []}
    confidence, correct = p.max(1), (p.argmax(1) == y)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap = abs(confidence[inside].mean() - correct[inside].mean())
            ece += inside.mean() * gap
            table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "faces": int(inside.sum()),
                          "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    one_hot = np.eye(p.shape[1])[y]
    return {"ece": float(ece), "nll": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean()),
            "brier": float(((p - one_hot) ** 2).sum(1).mean()), "mean_confidence": float(confidence.mean()),
            "accuracy": float(correct.mean()), "bins": table}


def ece_floor(probabilities: np.ndarray, draws: int = 200, bins: int = ECE_BINS, seed: int = 0) -> dict[str, float]:
    """The ECE that a perfectly calibrated model would show with these probabilities on this many
    faces: labels drawn from the probabilities themselves, ``draws`` times, scored by
    :func:`calibration_metrics`. Its median and 95th percentile: a measured ECE under the 95th is
    within the estimator's own noise (on 3,589 faces and 15 bins it is about 1-2.5%, not 0)."""
    p = np.asarray(probabilities, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cumulative = p.cumsum(1)
    eces = []
    for _ in range(draws):
        drawn = (rng.random((len(p), 1)) > cumulative).sum(1).clip(0, p.shape[1] - 1)
        eces.append(calibration_metrics(p, drawn, bins)["ece"])
    return {"median": float(np.median(eces)), "p95": float(np.percentile(eces, 95))}


def risk_coverage(probabilities: np.ndarray, labels: np.ndarray,
                  coverages: Sequence[float] = COVERAGES) -> list[dict[str, float]]:
    """Accuracy on the most confident ``coverage`` share of faces, for each coverage, with the
    confidence threshold (``min_confidence``) that keeps that share."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0:
        return []
    confidence = p.max(1)
    correct = p.argmax(1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for coverage in coverages:
        kept = order[: max(1, int(round(coverage * len(p))))]
        rows.append({"coverage": float(coverage), "accuracy": float(correct[kept].mean()),
                     "min_confidence": float(confidence[kept].min())})
    return rows


def format_calibration(metrics: dict[str, Any], table: list[dict[str, float]]) -> str:
    """The calibration figures and the risk-coverage table as plain text."""
    lines = [f"calibration: ECE {metrics['ece']:.2%}, NLL {metrics['nll']:.4f}, Brier {metrics['brier']:.4f}, "
             f"mean confidence {metrics['mean_confidence']:.2%} at accuracy {metrics['accuracy']:.2%}",
             "coverage  accuracy  min confidence"]
    lines += [f"{r['coverage']:>8.0%}  {r['accuracy']:>8.2%}  {r['min_confidence']:>14.3f}" for r in table]
    return "\n".join(lines) + "\n"


def plot_reliability(metrics: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """A reliability diagram: accuracy against confidence per bin (bars), the diagonal of perfect
    calibration, and each bin's share of faces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    total = sum(b["faces"] for b in metrics["bins"]) or 1
    for b in metrics["bins"]:
        ax.bar(b["low"], b["accuracy"], width=b["high"] - b["low"], align="edge", color="tab:blue",
               edgecolor="white", alpha=0.8)
        ax.bar(b["low"], b["faces"] / total, width=b["high"] - b["low"], align="edge", color="tab:gray", alpha=0.4)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar(0, 0, color="tab:blue", label="accuracy in the bin")
    ax.bar(0, 0, color="tab:gray", alpha=0.4, label="share of faces")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"ECE {metrics['ece']:.2%}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def raw_logits(classifier, faces: np.ndarray, tta: str = DEFAULT_TTA, batch_size: int = 512) -> np.ndarray:
    """A classifier's own logits (no temperature) for uint8 faces (N, 48, 48), in batches: (V, N, K),
    one slice per test-time view of ``tta`` (:func:`ferkit.views.view_logits`)."""
    images = torch.from_numpy(np.ascontiguousarray(faces[:, None]))
    return view_logits(network_of(classifier), images, tta, batch_size).numpy()


def network_of(classifier):
    """A classifier backend (numpy in, numpy out) as the tensor callable :func:`ferkit.views.view_logits`
    takes: its own logits, no temperature."""
    return lambda x: torch.from_numpy(classifier.logits(x.numpy()))


def fit_view_temperature(model, images, labels: np.ndarray, tta: str = DEFAULT_TTA, batch_size: int = 512,
                         device: str = "cpu") -> float:
    """The one temperature fit of ferkit: the temperature that makes ``model``'s probabilities honest
    when its test-time views ``tta`` are averaged as every entry point averages them
    (:func:`ferkit.views.average_views`), fitted on uint8 ``images`` (N, 1, 48, 48) with ``labels``
    (N,; below 0: left out). ``model``: a network or any callable from float batches to logits.
    ``ferkit calibrate`` and training both call it."""
    logits = view_logits(model, images, tta, batch_size, device).numpy()
    labels = np.asarray(labels)
    kept = labels >= 0
    return fit_temperature(logits[:, kept], labels[kept])


def training_log_prior(arrays, model, per: str = "labels") -> torch.Tensor:
    """log of the frequency in FER2013's Training split (``arrays``) of each label ``model``'s last
    layer scores (``labels``), or of the class each is merged into (``classes``)."""
    from ferkit.data import map_labels

    emotion = arrays.split("Training")[1]
    if per == "classes" and model.fine_to_class is not None:
        counts = np.bincount(map_labels(emotion, model.num_classes), minlength=model.num_classes)[model.fine_to_class]
    else:
        fitted = 7 if model.fine_to_class is not None else model.num_classes
        counts = np.bincount(map_labels(emotion, fitted), minlength=fitted)
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def check_adjustment(model: str | os.PathLike, tau: float) -> None:
    """Refuse a logit adjustment that cannot be made, before any data is read."""
    if Path(model).suffix == ".onnx":
        raise ValueError(f"{model}: logit adjustment changes the weights: give the PyTorch checkpoint or weights "
                         "file, then export it")
    if not 0 < tau <= 2:
        raise ValueError(f"--logit-adjustment must be in (0, 2], got {tau:g}")


def adjust_checkpoint(model: str | os.PathLike, arrays, tau: float, out: str | os.PathLike) -> Path:
    """A copy at ``out`` of the PyTorch checkpoint or weights file ``model`` with ``tau`` times the
    log Training prior of its labels taken off its last layer's bias (``arrays``: FER2013), the
    adjustment recorded in the file (``logit_adjustment``); its temperature is kept, to be refitted."""
    from ferkit.checkpoint import load_checkpoint, model_from_checkpoint, save_atomic

    check_adjustment(model, tau)
    ckpt = load_checkpoint(model)
    if "logit_adjustment" in ckpt:
        raise ValueError(f"{model}: already adjusted (tau {ckpt['logit_adjustment']['tau']:g}); start from the "
                         "file before it")
    network = model_from_checkpoint(ckpt, model)
    with torch.no_grad():
        network.fc.bias -= tau * training_log_prior(arrays, network)
    dtype = ckpt["model_state_dict"]["fc.bias"].dtype
    ckpt["model_state_dict"]["fc.bias"] = network.fc.bias.detach().to(dtype)
    ckpt["logit_adjustment"] = {"tau": float(tau), "prior": "FER2013 Training frequency of each fitted label"}
    save_atomic(ckpt, out)
    return Path(out)


def calibrate_model(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike | None = None,
                    labels: str = "fer2013", tta: str = DEFAULT_TTA, tau: float = 0.0) -> tuple[float, Path]:
    """Fit a model's temperature on FER2013 PublicTest (scored as :class:`ferkit.EmotionPredictor`
    runs it: PyTorch fp32 for a checkpoint, ONNX Runtime for an export, the probabilities of the
    test-time views ``tta`` averaged; ``labels``: FER2013's or FER+'s majority) and store it: in a
    copy of the checkpoint at ``out``, or in the file itself (ONNX: its metadata). ``tau`` > 0 first
    applies logit adjustment (:func:`adjust_checkpoint`; PyTorch files only, into ``out``). Returns
    the temperature and the file written."""
    from ferkit.checkpoint import load_checkpoint, save_atomic
    from ferkit.data import load_fer2013, split_labels
    from ferkit.infer.backends import load_classifier
    from ferkit.infer.export import set_onnx_temperature

    model, out = Path(model), Path(out or model)
    if model.suffix == ".onnx" and out.suffix != ".onnx":
        raise ValueError(f"an ONNX model's temperature goes into an ONNX file, not {out}")
    if tau:
        check_adjustment(model, tau)
    arrays = load_fer2013(data)
    if tau:
        model = adjust_checkpoint(model, arrays, tau, out)
    classifier = load_classifier(model, "onnx" if model.suffix == ".onnx" else "torch", torch.device("cpu"))
    pixels, _ = arrays.split("PublicTest")
    y = split_labels(arrays, "PublicTest", len(classifier.class_names), labels)
    images = torch.from_numpy(np.ascontiguousarray(pixels[:, None]))
    temperature = fit_view_temperature(network_of(classifier), images, y, tta)
    if model.suffix == ".onnx":
        set_onnx_temperature(model, out, temperature)
    else:
        ckpt = load_checkpoint(model)
        ckpt["temperature"] = temperature
        save_atomic(ckpt, out)
    return temperature, out
