"""Labelled face folders: faces from elsewhere than FER2013, scored like a FER2013 split.

    dataset/anger/001.jpg  dataset/happiness/002.png  dataset/neutral/...   # one subfolder per label

    record = evaluate_folder(EmotionPredictor(), "dataset/", cropped=True)
    print(record["accuracy"], record["balanced_accuracy"], record["skipped_folders"])

Folder names are matched against the label words of the common datasets (anger/angry, disgust,
fear, happiness/happy, sadness/sad, surprise, neutral, contempt) and mapped into the model's
classes the way FER2013's labels are; a folder with another name, or a label the model's task has no
class for (contempt outside FER+'s 8 classes), is reported and skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.data import EMOTIONS_7, class_mapping
from ferkit.defaults import DEFAULT_DETECTOR, IMAGE_SUFFIXES

# Folder name -> FER2013 label 0-6, or 7 for contempt (FER+'s eighth class).
LABEL_WORDS = {
    **{name: i for i, name in enumerate(EMOTIONS_7)},
    "anger": 0, "disgusted": 1, "fearful": 2, "afraid": 2, "happiness": 3, "joy": 3, "sadness": 4,
    "surprised": 5, "neutrality": 6, "contempt": 7,
}


def folder_class(name: str, num_classes: int) -> int | None:
    """The class index, in the ``num_classes`` task, of a folder named ``name``; None if it has none."""
    label = LABEL_WORDS.get(name.strip().lower())
    if label is None:
        return None
    if label == 7:
        return 7 if num_classes == 8 else None
    return class_mapping(num_classes)[label]


def list_folder(root: str | os.PathLike, num_classes: int) -> tuple[list[Path], np.ndarray, list[str]]:
    """The image files under ``root``'s label folders (sorted), their class indices, and the names of
    the folders skipped (no known label, or none in this task)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        k = folder_class(sub.name, num_classes)
        if k is None:
            skipped.append(sub.name)
            continue
        found = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        files += found
        labels += [k] * len(found)
    if not files:
        raise FileNotFoundError(f"{root}: no images in folders named after labels "
                                f"(found {skipped or 'no folders'}; expected names such as anger, happiness, neutral)")
    return files, np.asarray(labels, dtype=np.int64), skipped


def evaluate_folder(predictor, root: str | os.PathLike, cropped: bool = False, detector: Any = DEFAULT_DETECTOR,
                    batch_size: int = 256, progress: bool = False) -> dict[str, Any]:
    """Score ``predictor`` (an :class:`ferkit.infer.predictor.EmotionPredictor`) on a labelled face folder.

    ``cropped``: the images are face crops, classified as they are; otherwise ``detector`` finds the
    faces and the largest is scored (images without one are counted in ``no_face``). Unreadable
    files are counted in ``unreadable``. Returns :func:`ferkit.evaluation.classification_metrics`
    and :func:`ferkit.evaluation.trust_metrics` with those counts, the skipped folders and the settings.
    """
    from tqdm import tqdm

    from ferkit.evaluation import classification_metrics, trust_metrics
    from ferkit.infer.detection import get_detector
    from ferkit.infer.predictor import load_image

    names = predictor.class_names
    files, labels, skipped = list_folder(root, len(names))
    det = None if cropped else (get_detector(detector) if isinstance(detector, str) else detector)
    predicted = np.full(len(files), -1, dtype=np.int64)
    probabilities = np.zeros((len(files), len(names)), dtype=np.float32)
    unreadable = no_face = 0
    bar = tqdm(total=len(files), desc="faces", unit="img", disable=not progress, leave=False)
    for start in range(0, len(files), batch_size):
        chunk = range(start, min(start + batch_size, len(files)))
        crops, where = [], []
        for i in chunk:
            try:
                image = load_image(files[i])
            except ValueError:
                unreadable += 1
                continue
            if cropped:
                crops.append(image)
                where.append(i)
                continue
            faces = predictor.predict_frame(image, det)
            if not faces:
                no_face += 1
                continue
            predicted[i], probabilities[i] = faces[0].index, faces[0].scores  # the largest face
        if crops:
            probabilities[where] = predictor.predict_crops(crops)
            predicted[where] = probabilities[where].argmax(1)
        bar.update(len(chunk))
    bar.close()
    scored = predicted >= 0
    metrics = classification_metrics(labels[scored], predicted[scored], names)
    return {"folder": str(root), "cropped": cropped, "detector": None if cropped else det.name,
            "images": len(files), "unreadable": unreadable, "no_face": no_face, "skipped_folders": skipped,
            **metrics, **trust_metrics(probabilities[scored], labels[scored])}

