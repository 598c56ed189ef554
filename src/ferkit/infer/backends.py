"""Classifier backends: the network as PyTorch runs it, or exported to ONNX and run by ONNX Runtime.

Both take a float32 batch (N, 1, 48, 48) in [0, 1] and return logits (N, classes) as numpy. The
exports themselves are made by :mod:`ferkit.infer.export`; the bundled models are named in
:mod:`ferkit.infer.models`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ferkit.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from ferkit.defaults import BACKENDS
from ferkit.infer.export import ONNX_INPUT, ONNX_OUTPUT, cached_onnx, export_onnx
from ferkit.infer.models import bundled


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime and the ``onnx`` package (needed to export) are installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class Classifier:
    """What both backends share: ``classifier(batch)`` gives the logits divided by the model's
    ``temperature`` (its calibration, 1.0 if it has none: ``ferkit.calibration``), ``logits(batch)``
    the network's own."""

    name = "base"
    temperature = 1.0
    class_names: tuple[str, ...] = ()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        logits = self.logits(batch)
        return logits if self.temperature == 1.0 else logits / np.float32(self.temperature)


class TorchClassifier(Classifier):
    """The network in PyTorch, on any device."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, class_names: Sequence[str], device: torch.device,
                 temperature: float = 1.0) -> None:
        self.model = model.to(device).eval()
        self.class_names = tuple(class_names)
        self.device = device
        self.temperature = float(temperature)

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


class OnnxClassifier(Classifier):
    """The network exported to ONNX, run by ONNX Runtime on the CPU.

    ``class_names``: default, the ones stored in the file's metadata by :func:`export_onnx`; so is
    the temperature.
    ``threads``: ONNX Runtime's intra-op threads (default: its own choice, one per core).
    """

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("ONNX models need onnxruntime: pip install 'ferkit[onnx]'") from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: a spinning pool steals the cores OpenCV's detector
        # needs between two classifications (benchmarks/still_speed.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for bad protobuf, bad graphs...
            raise CheckpointError(f"{path}: not a loadable ONNX model ({str(e).strip()[:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [ONNX_INPUT]:
            raise CheckpointError(f"{path}: expected one input named {ONNX_INPUT!r}, found {inputs}")
        names = class_names or json.loads(meta.get("class_names", "null") or "null")
        if not names:
            raise CheckpointError(f"{path}: no class names in its metadata (export it with `ferkit export --onnx`)")
        self.class_names = tuple(names)
        outputs = self.session.get_outputs()[0].shape
        if len(outputs) != 2 or (isinstance(outputs[1], int) and outputs[1] != len(names)):
            raise CheckpointError(f"{path}: the model outputs shape {outputs}, not one score for each of the "
                                  f"{len(names)} classes {list(names)}")
        try:
            self.temperature = float(meta.get("temperature", 1.0))
        except ValueError:
            self.temperature = math.nan
        if not 0 < self.temperature < math.inf:
            raise CheckpointError(f"{path}: its temperature must be a positive number, found {meta['temperature']!r}")
        self.metadata = dict(meta)
        self.path = path
        self.name = "onnxruntime-int8" if meta.get("quantization") == "int8" else "onnxruntime"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def load_classifier(checkpoint: Path, backend: str = "auto", device: torch.device | None = None,
                    threads: int | None = None) -> Classifier:
    """The classifier for a checkpoint (``.pth``/``.pt``) or an ONNX export (``.onnx``), each file
    read once.

    ``backend``: ``torch``; ``onnx`` (ONNX Runtime, CPU); ``auto``: ONNX Runtime when the device is
    the CPU and it is installed, else PyTorch. ``threads``: ONNX Runtime's threads (default: all cores).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    device = device or torch.device("cpu")
    if checkpoint.suffix == ".onnx":
        if backend == "torch":
            raise ValueError(f"{checkpoint}: an ONNX model runs on the onnx backend, not torch")
        return OnnxClassifier(checkpoint, threads=threads)
    use_onnx = backend == "onnx" or (backend == "auto" and device.type == "cpu" and onnxruntime_available())
    if use_onnx and device.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU, not {device}")
    shipped = bundled(checkpoint)
    if use_onnx and shipped is not None and shipped.onnx.is_file():
        return OnnxClassifier(shipped.onnx, threads=threads)  # its class names are in its metadata
    ckpt = load_checkpoint(checkpoint)
    if use_onnx:
        try:
            return OnnxClassifier(cached_onnx(checkpoint, ckpt), class_names=ckpt["class_names"], threads=threads)
        except OSError as e:  # an unwritable cache costs an export per run, never the run
            print(f"warning: cannot keep the ONNX export of {checkpoint} in the cache ({e}); exporting it for "
                  "this run only", file=sys.stderr)
            with tempfile.TemporaryDirectory() as tmp:  # ONNX Runtime holds the model once the session is made
                onnx = export_onnx(checkpoint, Path(tmp) / "model.onnx", ckpt=ckpt)
                return OnnxClassifier(onnx, class_names=ckpt["class_names"], threads=threads)
    return TorchClassifier(model_from_checkpoint(ckpt, checkpoint), ckpt["class_names"], device, ckpt["temperature"])
