"""Evaluation: predictions over a split, metrics, the classification report and the plots."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ferkit.calibration import calibration_metrics, format_calibration, plot_reliability, risk_coverage
from ferkit.defaults import DEFAULT_TTA
from ferkit.views import average_views, view_logits


@torch.no_grad()
def predict_logits(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    tta: str = "none",
    bf16: bool = False,
    progress: bool = False,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Scores (N, classes) on the CPU for uint8 (N, 1, 48, 48) or float [0, 1] images: logits divided
    by ``temperature``, or with test-time views the log of their averaged probabilities
    (:func:`ferkit.views.average_views`; argmax and cross-entropy read both alike). ``bf16``: autocast
    to bfloat16 with channels_last. ``progress``: a bar on stderr."""
    logits = view_logits(model, images, tta, batch_size, device, bf16, progress)
    if tta == "none":
        return logits[0] / temperature
    return average_views(logits, temperature).log()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy (the mean recall of the classes present), confusion matrix (rows:
    true, columns: predicted), and per-class precision, recall, F1 and support, with macro and
    support-weighted averages."""
    k = len(names)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    per_class = {
        n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for n, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    total = int(support.sum())
    weights = support / max(total, 1)
    return {
        "accuracy": float(tp.sum() / max(total, 1)),
        "balanced_accuracy": float(recall[support > 0].mean()) if total else 0.0,
        "num_samples": total,
        "per_class": per_class,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                      "f1": float(f1.mean())},
        "weighted_avg": {"precision": float(precision @ weights), "recall": float(recall @ weights),
                         "f1": float(f1 @ weights)},
        "confusion_matrix": cm.tolist(),
        "class_names": list(names),
    }


def format_report(metrics: dict[str, Any], title: str = "") -> str:
    """A plain-text classification report in the familiar scikit-learn layout."""
    names = metrics["class_names"]
    width = max(12, *(len(n) for n in names))
    lines = [title] if title else []
    lines.append(f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}")
    lines.append("")
    for n in names:
        c = metrics["per_class"][n]
        lines.append(f"{n:>{width}} {c['precision']:>10.4f} {c['recall']:>10.4f} {c['f1']:>10.4f} {c['support']:>10}")
    lines.append("")
    total = metrics["num_samples"]
    lines.append(f"{'accuracy':>{width}} {'':>10} {'':>10} {metrics['accuracy']:>10.4f} {total:>10}")
    lines.append(f"{'balanced acc':>{width}} {'':>10} {'':>10} {metrics['balanced_accuracy']:>10.4f} {total:>10}")
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        a = metrics[key]
        lines.append(f"{label:>{width}} {a['precision']:>10.4f} {a['recall']:>10.4f} {a['f1']:>10.4f} {total:>10}")
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(metrics: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """Save the confusion matrix as counts with row-normalized shading."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"])
    names = metrics["class_names"]
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.2 * len(names) + 2))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.2%}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_history(history: dict[str, list[float]], path: str | os.PathLike) -> None:
    """Save loss and accuracy per epoch, train vs validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.plot(epochs, history[f"train_{key}"], "o-", label="train")
        ax.plot(epochs, history[f"val_{key}"], "o-", label="validation (PublicTest)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def trust_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """How far the probabilities can be trusted: ``calibration`` (ECE, NLL, Brier, reliability bins)
    and ``risk_coverage`` (accuracy when only the most confident faces are kept)."""
    return {"calibration": calibration_metrics(probabilities, labels),
            "risk_coverage": risk_coverage(probabilities, labels)}


def write_reports(
    metrics: dict[str, Any], out: str | os.PathLike, split: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``confusion_matrix.png``, ``classification_report.txt`` and ``metrics.json`` to ``out``,
    and ``reliability.png`` where the metrics hold the calibration (:func:`trust_metrics`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"split": split, **(extra or {}), **metrics}
    title = f"{split}: accuracy {metrics['accuracy']:.2%} ({metrics['num_samples']} images)"
    plot_confusion_matrix(metrics, out / "confusion_matrix.png", title)
    report = format_report(metrics, title)
    if "calibration" in record:
        plot_reliability(record["calibration"], out / "reliability.png",
                         f"{split}: ECE {record['calibration']['ece']:.2%}")
        report += "\n" + format_calibration(record["calibration"], record["risk_coverage"])
    (out / "classification_report.txt").write_text(report)
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "PrivateTest",
    out: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 512,
    skip_bad_rows: bool = False,
    tta: str | None = None,
    precision: str | None = None,
    labels: str = "fer2013",
    backend: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score any checkpoint (or ONNX export) on one split of FER2013 and write the reports (to
    ``out`` if given).

    ``backend`` None scores it as it was trained to be scored: in PyTorch, with ``tta`` and
    ``precision`` (``auto``, ``bf16``, ``fp32``) by default the checkpoint's. A backend (``auto``,
    ``torch``, ``onnx``) scores it as :class:`ferkit.EmotionPredictor` runs it: that backend's
    classifier, with its default test-time views (``DEFAULT_TTA``) unless ``tta`` says. An ONNX
    export always runs on ONNX Runtime.
    ``labels``: ``fer2013`` (the split's own) or ``ferplus`` (FER+'s majority; rows without one are
    left out and counted as ``dropped``).
    """
    from ferkit.checkpoint import load_checkpoint, model_from_checkpoint
    from ferkit.data import SPLIT_ALIASES, USAGES, load_fer2013, split_labels
    from ferkit.device import resolve_device, uses_bf16
    from ferkit.infer.backends import load_classifier

    usage = SPLIT_ALIASES.get(split, split)
    if usage not in USAGES:
        raise ValueError(f"unknown split {split!r}; expected one of {USAGES}")
    arrays = load_fer2013(data, skip_bad_rows=skip_bad_rows)
    pixels, _ = arrays.split(usage)
    images = torch.from_numpy(pixels).unsqueeze(1)
    if backend is not None or Path(checkpoint).suffix == ".onnx":  # as EmotionPredictor runs it
        classifier = load_classifier(Path(checkpoint), backend or "auto", resolve_device(device))
        ckpt = {"class_names": classifier.class_names}  # its scores come divided by its temperature
        tta, backend = tta or DEFAULT_TTA, classifier.name
        precision = "int8" if backend.endswith("int8") else "fp32"
        logits = predict_logits(lambda x: torch.from_numpy(classifier(x.numpy())), images, batch_size, "cpu", tta,
                                progress=progress)
    else:
        ckpt = load_checkpoint(checkpoint)
        dev = resolve_device(device)
        model = model_from_checkpoint(ckpt, checkpoint).to(dev)
        config = ckpt.get("config", {})
        tta, backend = tta or config.get("tta", "none"), "torch"
        precision = precision or config.get("precision", "auto")
        logits = predict_logits(model, images, batch_size, dev, tta, uses_bf16(precision, dev), progress,
                                ckpt["temperature"])
    y = split_labels(arrays, usage, len(ckpt["class_names"]), labels)
    kept = y >= 0
    metrics = classification_metrics(y[kept], logits.argmax(1).numpy()[kept], ckpt["class_names"])
    extra = {"checkpoint": str(checkpoint), "data": str(data), "epoch": ckpt.get("epoch"),
             "val_accuracy": ckpt.get("val_accuracy"), "backend": backend, "tta": tta, "precision": precision,
             "labels": labels, "dropped": int((~kept).sum()),
             **trust_metrics(logits.softmax(1).numpy()[kept], y[kept])}
    if out is not None:
        return write_reports(metrics, out, usage, extra)
    return {"split": usage, **extra, **metrics}
