"""The models that ship inside ferkit, by name: ``EmotionPredictor(model=NAME)`` and ``--model NAME``
find them here; any other name is a path to a checkpoint, weights file or ONNX export."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"


@dataclass(frozen=True)
class BundledModel:
    """A model that ships inside ferkit: fp16 weights, their int8 ONNX export, and its card (JSON)."""

    name: str
    weights: Path
    onnx: Path
    card: Path


# The models EmotionPredictor(model=NAME) and --model NAME find; the first is the default.
MODELS = {m.name: m for m in (
    BundledModel("fast", WEIGHTS_DIR / "fast_fp16.pt", WEIGHTS_DIR / "fast_int8.onnx", WEIGHTS_DIR / "fast.json"),
    BundledModel("fast7", WEIGHTS_DIR / "fast7_fp16.pt", WEIGHTS_DIR / "fast7_int8.onnx", WEIGHTS_DIR / "fast7.json"),
)}
DEFAULT_MODEL = "fast"
NOT_YET_SHIPPED = ("accurate",)


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """The file of a model: a bundled one by name (``None``: the default, ``fast``), else a path to a
    checkpoint, weights file or ONNX export."""
    name = DEFAULT_MODEL if model is None else model
    if isinstance(name, str) and name in MODELS:
        path = MODELS[name].weights
        if not path.is_file():
            raise FileNotFoundError(f"the bundled model {name!r} ({path}) is missing; pass a checkpoint path")
        return path
    if isinstance(name, str) and name in NOT_YET_SHIPPED:
        raise ValueError(f"the {name!r} model does not ship with this version of ferkit; bundled models: "
                         f"{', '.join(MODELS)}")
    return Path(name)


def bundled(path: Path) -> BundledModel | None:
    """The bundled model whose weights ``path`` is, if it is one."""
    return next((m for m in MODELS.values() if m.weights == path), None)
