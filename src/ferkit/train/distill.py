"""Distillation from a bank of teachers: each trained model's logits for every FER2013 image, written
once (``ferkit teach``) and committed, so that any later student can learn from them without the
teacher's weights (``ferkit train --teacher reports/teachers/A reports/teachers/B ...``).

A teacher is a folder (``reports/teachers/<name>/``) holding

- ``logits.npz`` (plain arrays, read with ``allow_pickle=False``):
  ``logits`` float16 (N, V, L), the logits of the L labels the teacher fitted (FER2013's seven for a
  model trained with fine labels) for every row of the FER2013 file (all three splits, file order)
  and each of V test-time views (``views``, in :func:`ferkit.views.tta_views`' order); ``labels``
  (L,); ``views``; ``pixels_sha256``, the SHA-256 of every image's pixels, so that a file written
  for other data is refused; and for each labelled face folder scored, ``folder/<name>/files``
  (paths below it, their first part the label folder) and ``folder/<name>/logits`` (n, V, L);
- ``teacher.json``: the model file and its SHA-256, its training config and the ``ferkit train``
  command that makes it, the machine and date, logits.npz's SHA-256, and its scores
  (:func:`teacher_scores`).

A student fits, for each Training image, ``(1 - w) * its own target + w * teacher`` where
``teacher`` is the mean over the teachers of ``average_views(logits / T)``, merged into the
student's labels where a teacher fitted FER2013's seven and the student fewer; with
``--teacher-prior``, each teacher's probabilities are first reweighted to another's class prior
(:func:`match_prior`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ferkit.checkpoint import load_checkpoint, model_from_checkpoint, write_atomic
from ferkit.data import EMOTIONS_7, Fer2013Arrays, class_mapping, class_names, merge_columns, split_labels
from ferkit.device import describe_machine
from ferkit.evaluation import classification_metrics
from ferkit.folders import folder_class, list_folder
from ferkit.infer.predictor import load_image, resize_face
from ferkit.train.config import RECIPES, RUN_FIELDS, TrainConfig
from ferkit.views import average_views, num_views, view_logits

LOGITS_FILE, RECORD_FILE = "logits.npz", "teacher.json"
SCORED_VIEWS = ("flip", "all")  # teacher_scores: the views users get by default, and every view in the file


@dataclass
class Teacher:
    """A teacher's logits as read from its folder (see the module's docstring)."""

    path: Path
    logits: np.ndarray  # float16 (N, V, L)
    labels: tuple[str, ...]
    views: str
    folders: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)

    def probabilities(self, logits: np.ndarray, num_labels: int, temperature: float = 1.0,
                      views: str = "all") -> np.ndarray:
        """Probabilities (n, ``num_labels``) of some of its logits (n, V, L): ``views`` ``all``, or
        ``flip`` (the whole image and its mirror, where the file holds them)."""
        if views == "flip":
            logits = logits[:, flip_views(self.views)]
        p = average_views(np.moveaxis(logits.astype(np.float32), 1, 0), temperature)
        student = class_names(num_labels)
        if self.labels == student:
            return p
        if self.labels == EMOTIONS_7:
            return merge_columns(p, num_labels)
        raise ValueError(f"--teacher {self.path}: the teacher's labels {self.labels} cannot be merged into the "
                         f"student's {student}")


def flip_views(views: str) -> list[int]:
    """Where the whole image and its mirror sit among the views of ``views``."""
    if views == "none":
        return [0]
    if views in ("flip", "tencrop_full", "multiscale"):  # the whole image is each set's first crop
        half = num_views(views) // 2
        return [0, half]
    raise ValueError(f"the view set {views!r} holds no whole image")


def pixels_sha256(arrays: Fer2013Arrays) -> str:
    """The SHA-256 of every image's pixels (uint8, file order): what a teacher file was made for."""
    return hashlib.sha256(np.ascontiguousarray(arrays.pixels).tobytes()).hexdigest()


def fitted_labels(ckpt: dict) -> tuple[str, ...]:
    """The labels a checkpoint's network outputs before any merging: FER2013's seven for a model
    trained with fine labels, else its classes."""
    return EMOTIONS_7 if ckpt["model_config"].get("fine_to_class") else tuple(ckpt["class_names"])


def train_command(config: dict) -> str:
    """The ``ferkit train`` command that makes a run of ``config`` (its recipe and every field that
    differs from it; where-and-how-to-run fields left out but ``--data`` and ``--out``)."""
    recipe = config.get("recipe", "seed")
    base = {**vars(TrainConfig()), **RECIPES.get(recipe, {})}
    known = {k: v for k, v in config.items() if k in base}
    parts = ["ferkit train", f"--recipe {recipe}"]
    for key, value in vars(TrainConfig(**known)).items():  # through TrainConfig: a saved list is its tuple
        if key == "recipe" or key in RUN_FIELDS or key not in known or value == base[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            parts.append(f"{flag} {' '.join(str(v) for v in value)}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts + [f"--data {config.get('data', 'fer2013.csv.gz')}", f"--out {config.get('out', 'runs')}"])


def write_teacher(model: str | os.PathLike, arrays: Fer2013Arrays, out: str | os.PathLike, views: str = "flip",
                  folders: Sequence[str | os.PathLike] = (), device: torch.device | str = "cpu",
                  batch_size: int = 256, progress: bool = False) -> Path:
    """Write a teacher folder (see the module's docstring) from a checkpoint or fp16 weights file:
    the logits of every FER2013 image under ``views`` and of the crops of each labelled ``folder``."""
    out, model = Path(out), Path(model)
    if out.suffix:
        raise ValueError(f"{out}: a teacher is a folder (reports/teachers/<name>), not a file")
    ckpt = load_checkpoint(model)
    net = model_from_checkpoint(ckpt, model).to(device).eval()
    fitted = lambda x: net(x, merge=False)  # noqa: E731 - the labels the network fitted, unmerged

    def logits_of(pixels: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1)
        return view_logits(fitted, images, views, batch_size, device, progress=progress).numpy().transpose(1, 0, 2)

    contents = dict(logits=logits_of(arrays.pixels).astype(np.float16),
                    labels=np.array(fitted_labels(ckpt)),
                    views=np.array(views), pixels_sha256=np.array(pixels_sha256(arrays)))
    for root in folders:
        root = Path(root)
        files, _, _ = list_folder(root, 7)
        crops = np.stack([resize_face(load_image(f)) for f in files])
        contents[f"folder/{root.name}/files"] = np.array([f.relative_to(root).as_posix() for f in files])
        contents[f"folder/{root.name}/logits"] = logits_of(crops).astype(np.float16)

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez_compressed(f, **contents)

    write_atomic(out / LOGITS_FILE, save)
    write_record(out, model, arrays, ckpt)
    return out


def write_record(out: Path, model: Path, arrays: Fer2013Arrays, ckpt: dict | None = None) -> Path:
    """Write a teacher folder's ``teacher.json`` from its logits and the model they came from (its
    checkpoint ``ckpt``, read from ``model`` if not given)."""
    ckpt = load_checkpoint(model) if ckpt is None else ckpt
    teacher = read_teacher(out, arrays)
    shown = model.resolve().relative_to(Path.cwd()) if model.resolve().is_relative_to(Path.cwd()) else model
    record = {
        "name": out.name, "model": shown.as_posix(), "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "labels": list(teacher.labels), "views": teacher.views, "config": ckpt.get("config", {}),
        "command": train_command(ckpt["config"]) if ckpt.get("config") else None, "epoch": ckpt.get("epoch"),
        "machine": describe_machine(), "torch": torch.__version__, "date": date.today().isoformat(),
        "files": {LOGITS_FILE: hashlib.sha256((out / LOGITS_FILE).read_bytes()).hexdigest()},
        "scores": teacher_scores([teacher], arrays),
    }
    write_atomic(out / RECORD_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    return out / RECORD_FILE


def describe_teacher(out: str | os.PathLike) -> str:
    """A teacher folder in a few lines: its size, model, views and scores (what ``ferkit teach`` prints)."""
    out = Path(out)
    record = json.loads((out / RECORD_FILE).read_text())
    size = (out / LOGITS_FILE).stat().st_size / 2**20
    lines = [f"wrote {out} ({size:.1f} MiB): the logits of {record['model']} for every FER2013 image under "
             f"{record['views']} views"]
    lines += [f"  {views} views: " + ", ".join(f"{k} {v:.2%}" for k, v in scores.items())
              for views, scores in record["scores"].items()]
    return "\n".join(lines)


def read_teacher(path: str | os.PathLike, arrays: Fer2013Arrays) -> Teacher:
    """A teacher folder (or its logits.npz), checked against ``arrays``: refuses a file written for
    other data, of the wrong shape, or holding NaN or infinite logits."""
    path = Path(path)
    file = path / LOGITS_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"--teacher {path}: no {LOGITS_FILE} there (write one with `ferkit teach`)")
    try:
        with np.load(file, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:  # not a zip, truncated, or an object array (pickles are refused)
        raise ValueError(f"--teacher {file}: not a readable .npz teacher file ({str(e).splitlines()[0][:200]})") \
            from None
    missing = [k for k in ("logits", "labels", "views", "pixels_sha256") if k not in data]
    if missing:
        raise ValueError(f"--teacher {file}: not a teacher file of this version (no {', '.join(missing)}; write it "
                         "again with `ferkit teach`)")
    logits, labels, views = data["logits"], tuple(str(x) for x in data["labels"]), str(data["views"])
    if views not in ("none", "flip", "tencrop", "tencrop_full", "multiscale") or not labels or logits.ndim != 3 \
            or logits.shape[1:] != (num_views(views), len(labels)):
        raise ValueError(f"--teacher {file}: logits of shape {logits.shape} do not fit {views!r} views x "
                         f"{len(labels)} labels")
    if len(logits) != len(arrays.pixels) or str(data["pixels_sha256"]) != pixels_sha256(arrays):
        raise ValueError(f"--teacher {file}: written for other data ({len(logits)} images; this data has "
                         f"{len(arrays.pixels)}, or other pixels): write it again with `ferkit teach` on this file")
    if not np.isfinite(logits).all():
        raise ValueError(f"--teacher {file}: logits hold NaN or infinite values")
    folders = {k.split("/")[1]: ([str(x) for x in data[k]], data[k[: -len("files")] + "logits"])
               for k in data if k.startswith("folder/") and k.endswith("/files")}
    return Teacher(path, logits, labels, views, folders)


def teacher_probabilities(paths: Sequence[str | os.PathLike] | str, arrays: Fer2013Arrays, num_labels: int,
                          temperature: float = 1.0, prior: str | os.PathLike | None = None,
                          classes: int | None = None) -> np.ndarray:
    """The bank's probabilities (N, ``num_labels``) for the Training images of ``arrays``: the mean
    over the teachers at ``paths`` of each one's views averaged at ``temperature``. With ``prior`` (a
    teacher folder), each teacher's are reweighted first so that their mean, summed into ``classes``
    (default: the labels themselves), is ``prior``'s (:func:`match_prior`; one factor per class, shared
    by the labels merged into it)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    training = arrays.rows("Training")
    teachers = [read_teacher(p, arrays) for p in paths]
    if prior is None:
        return mean_probabilities(teachers, lambda t: t.logits[training], num_labels, temperature)
    classes = classes or num_labels
    merged = (lambda p: p) if classes == num_labels else (lambda p: merge_columns(p, classes))  # noqa: E731
    reference = read_teacher(prior, arrays)
    target = merged(reference.probabilities(reference.logits[training], num_labels, temperature)).mean(0)
    bank = []
    for t in teachers:
        p = t.probabilities(t.logits[training], num_labels, temperature)
        _, weights = match_prior(merged(p), target)
        p = p * (weights if classes == num_labels else weights[class_mapping(classes)])
        bank.append(p / p.sum(1, keepdims=True))
    return np.mean(bank, axis=0)


def match_prior(p: np.ndarray, target: np.ndarray, steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``p`` (n, k) reweighted by one factor per class and renormalized, the factors (k,) chosen so
    that its mean over the rows is ``target`` (k,): what a teacher knows, without how often its
    labels made it call each class. Returns the reweighted probabilities and the factors."""
    weights = np.ones(p.shape[1])
    for _ in range(steps):  # iterative proportional fitting: converges in a few dozen steps
        q = p * weights
        weights = weights * target / (q / q.sum(1, keepdims=True)).mean(0)
    q = p * weights
    return q / q.sum(1, keepdims=True), weights


def mean_probabilities(teachers: Sequence[Teacher], pick, num_labels: int, temperature: float = 1.0,
                       views: str = "all") -> np.ndarray:
    """The bank's mean: each teacher's probabilities (n, ``num_labels``) of the logits ``pick(teacher)``
    selects (n, V, L), averaged over ``teachers`` (:meth:`Teacher.probabilities` for the arguments)."""
    return np.mean([t.probabilities(pick(t), num_labels, temperature, views) for t in teachers], axis=0)


def teacher_scores(teachers: Sequence[Teacher], arrays: Fer2013Arrays, num_classes: int = 4,
                   temperature: float = 1.0) -> dict:
    """The mean of ``teachers``' probabilities scored in ``num_classes`` classes, for each of
    ``SCORED_VIEWS`` (``flip`` alone where every file holds just those two): PublicTest accuracy on
    FER2013's and FER+'s labels, and each folder's balanced accuracy (folders every teacher holds)."""
    public = arrays.rows("PublicTest")
    shared = {name for name in set.intersection(*(set(t.folders) for t in teachers))
              if all(t.folders[name][0] == teachers[0].folders[name][0] for t in teachers)}

    def mean(pick, views: str) -> np.ndarray:
        return mean_probabilities(teachers, pick, num_classes, temperature, views)

    out: dict = {}
    for views in SCORED_VIEWS if any(t.views != "flip" for t in teachers) else ("flip",):
        predicted = mean(lambda t: t.logits[public], views).argmax(1)
        scores = {}
        for labels in ("fer2013", "ferplus"):
            y = split_labels(arrays, "PublicTest", num_classes, labels)
            kept = y >= 0
            scores[f"PublicTest {labels}"] = round(float((predicted[kept] == y[kept]).mean()), 4)
        for name in sorted(shared):
            files = teachers[0].folders[name][0]
            y = np.array([-1 if (k := folder_class(f.split("/")[0], num_classes)) is None else k for f in files])
            kept = y >= 0
            p = mean(lambda t, name=name: t.folders[name][1], views)[kept].argmax(1)
            scores[f"{name} balanced"] = round(classification_metrics(y[kept], p, class_names(num_classes))
                                               ["balanced_accuracy"], 4)
        out[views] = scores
    return out

