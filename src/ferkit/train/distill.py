"""Distillation: a trained model's soft targets for every Training image, written once (``ferkit
teach``) and mixed into another run's targets (``ferkit train --teacher FILE``).

The file is a plain ``.npz`` (read with ``allow_pickle=False``):

- ``logits``: float16 (N, 2, K), the teacher's logits of the labels it fitted (FER2013's seven for a
  model trained with fine labels) for each Training image and for its mirror;
- ``labels``: (K,) those labels' names;
- ``rows``: (N,) each image's row among the FER2013 file's rows;
- ``pixels_sha256``: the SHA-256 of the Training pixels, so that a file written for other data is
  refused instead of teaching the wrong images.

A student fits, for each image, ``(1 - w) * its own target + w * teacher`` where ``teacher`` is the
mean of the two views' probabilities (so it does not depend on whether augmentation flips the image),
merged into the student's labels when the teacher fitted FER2013's seven and the student fewer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ferkit.checkpoint import load_checkpoint, model_from_checkpoint, write_atomic
from ferkit.data import EMOTIONS_7, Fer2013Arrays, class_names, merge_columns
from ferkit.evaluation import predict_logits


def training_pixels_sha256(arrays: Fer2013Arrays) -> str:
    """The SHA-256 of the Training split's pixels (uint8, row order): what a teacher file was made for."""
    pixels, _ = arrays.split("Training")
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def fitted_labels(ckpt: dict) -> tuple[str, ...]:
    """The labels a checkpoint's network outputs before any merging: FER2013's seven for a model
    trained with fine labels, else its classes."""
    return EMOTIONS_7 if ckpt["model_config"].get("fine_to_class") else tuple(ckpt["class_names"])


def write_teacher(model: str | os.PathLike, arrays: Fer2013Arrays, out: str | os.PathLike,
                  device: torch.device | str = "cpu", batch_size: int = 512) -> Path:
    """Write a teacher file (see the module's docstring) from a checkpoint or fp16 weights file."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"{out}: a teacher file is an .npz")
    ckpt = load_checkpoint(model)
    net = model_from_checkpoint(ckpt, model).to(device).eval()
    pixels, _ = arrays.split("Training")
    if len(pixels) == 0:
        raise ValueError("the data has no Training rows to write a teacher's targets for")
    images = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1)
    fitted = lambda x: net(x, merge=False)  # noqa: E731 - the labels the network fitted, unmerged
    logits = np.stack([predict_logits(fitted, view, batch_size, device).numpy()
                       for view in (images, images.flip(-1))], axis=1)
    contents = dict(logits=logits.astype(np.float16), labels=np.array(fitted_labels(ckpt)),
                    rows=np.flatnonzero(arrays.rows("Training")),
                    pixels_sha256=np.array(training_pixels_sha256(arrays)))

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(f, **contents)

    write_atomic(out, save)
    return out


def teacher_probabilities(path: str | os.PathLike, arrays: Fer2013Arrays, num_labels: int) -> np.ndarray:
    """A teacher file's probabilities (N, ``num_labels``) for the Training images of ``arrays``: its
    two views averaged, merged into the student's ``num_labels`` labels when the teacher fitted
    FER2013's seven. Refuses a file written for other data, or for labels it cannot merge into."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--teacher {path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            logits, labels, rows, digest = (f[k] for k in ("logits", "labels", "rows", "pixels_sha256"))
    except KeyError as e:
        raise ValueError(f"--teacher {path}: not a teacher file (no {e}; write one with `ferkit teach`)") from None
    except (OSError, ValueError) as e:  # not a zip, truncated, or an object array (pickles are refused)
        raise ValueError(f"--teacher {path}: not a readable .npz teacher file ({str(e).splitlines()[0][:200]})") \
            from None
    labels = tuple(str(x) for x in labels)
    training_rows = np.flatnonzero(arrays.rows("Training"))
    if logits.ndim != 3 or logits.shape[:2] != (len(rows), 2) or logits.shape[2] != len(labels) or not labels:
        raise ValueError(f"--teacher {path}: logits of shape {logits.shape} do not fit {len(rows)} rows x 2 views "
                         f"x {len(labels)} labels")
    if not np.array_equal(rows, training_rows) or str(digest) != training_pixels_sha256(arrays):
        raise ValueError(f"--teacher {path}: written for other data ({len(rows)} Training images; this data has "
                         f"{len(training_rows)}, or other pixels): write it again with `ferkit teach` on this file")
    if not np.isfinite(logits).all():
        raise ValueError(f"--teacher {path}: logits hold NaN or infinite values")
    probs = torch.from_numpy(logits.astype(np.float32)).softmax(-1).mean(1).numpy()
    student = class_names(num_labels)
    if labels == student:
        return probs
    if labels == EMOTIONS_7:
        return merge_columns(probs, num_labels)
    raise ValueError(f"--teacher {path}: the teacher's labels {labels} cannot be merged into the student's "
                     f"{student}")
