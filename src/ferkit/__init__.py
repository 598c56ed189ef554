"""ferkit: facial emotion recognition with a from-scratch ResNet-18 trained on FER2013.

    from ferkit import EmotionPredictor
    faces = EmotionPredictor().predict_frame(image_bgr)

The public names below load on first use, so that ``import ferkit`` (and ``ferkit --help``) is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.5.0"

_HOME = {
    "EmotionPredictor": "ferkit.infer.predictor", "Face": "ferkit.infer.predictor",
    "FacePipeline": "ferkit.infer.pipeline", "create_detector": "ferkit.infer.detection",
    "TrainConfig": "ferkit.train.config", "RECIPES": "ferkit.train.config", "train": "ferkit.train.loop",
    "evaluate_checkpoint": "ferkit.evaluation", "evaluate_folder": "ferkit.folders",
    "load_fer2013": "ferkit.data", "export_onnx": "ferkit.infer.export",
}
__all__ = ["__version__", *sorted(_HOME)]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__() -> list[str]:
    return __all__
