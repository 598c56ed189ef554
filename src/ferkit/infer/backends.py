"""Classifier backends: the network as PyTorch runs it, or exported to ONNX and run by ONNX Runtime.

Both take a float32 batch (N, 1, 48, 48) in [0, 1] and return logits (N, classes) as numpy.
ONNX files are protobuf, not pickles: loading one runs no code. Exports:

    export_onnx(checkpoint, "model.onnx")                                 # fp32, dynamic batch
    export_onnx(checkpoint, "model_int8.onnx", calibration=train_pixels)  # int8, static quantization
    export_torchscript(checkpoint, "model.torchscript")                   # for LibTorch / C++
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ferkit.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, write_atomic
from ferkit.data import IMAGE_SIZE
from ferkit.defaults import BACKENDS

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
BUNDLED_MODEL = MODELS[DEFAULT_MODEL].weights
ONNX_INPUT, ONNX_OUTPUT = "faces", "logits"
ONNX_OPSET = 17
CALIBRATION_BATCH = 64


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


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    calibration: np.ndarray | None = None,
    ckpt: dict | None = None,
    progress: bool = False,
) -> Path:
    """Export a checkpoint to ONNX (dynamic batch, class names in the metadata).

    ``calibration``: uint8 faces (N, 48, 48), for example a few thousand FER2013 training images:
    given, the model is quantized to int8 (QDQ, per-channel weights), with activation ranges
    measured on them. About four times smaller, and faster on CPUs with VNNI (on these Zen 4 cores,
    ``benchmarks/inference_speed.py``: 4.5x at batch 1, 3.1x at batch 64). ``ckpt``: the checkpoint
    already loaded, if it is. ``progress``: a bar over the calibration batches, on stderr.
    """
    import onnx

    ckpt = ckpt or load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():  # the TorchScript-based exporter warns that it is deprecated; torch is pinned
            warnings.simplefilter("ignore", DeprecationWarning)
            # it also passes forward's `merge=True` as a traced tensor, which is fine as a constant
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model, (torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE),), str(fp32), input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT], dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                opset_version=ONNX_OPSET, dynamo=False,
            )
        metadata = {"class_names": json.dumps(list(ckpt["class_names"])), "source": Path(checkpoint).name,
                    "val_accuracy": str(ckpt.get("val_accuracy")), "producer": "ferkit",
                    "temperature": str(ckpt.get("temperature", 1.0))}
        if calibration is not None:
            fp32 = _quantize_int8(fp32, Path(tmp) / "int8.onnx", calibration, progress)
            metadata["quantization"] = "int8"
        proto = onnx.load(str(fp32))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        write_atomic(out, lambda staged: onnx.save(proto, staged))  # no half-written model if interrupted
    return out


def _quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, progress: bool = False) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = np.asarray(calibration)
    if calibration.ndim != 3 or calibration.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(calibration) == 0:
        raise ValueError(f"calibration faces must be (N, 48, 48) with N > 0, got {calibration.shape}")

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(tqdm(range(0, len(calibration), CALIBRATION_BATCH), desc="calibrating int8",
                                     unit="batch", disable=not progress, leave=False))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.batches, None)
            if i is None:
                return None
            return {ONNX_INPUT: calibration[i : i + CALIBRATION_BATCH, None].astype(np.float32) / 255}

    prepared = out.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    # uint8 activations with int8 per-channel weights: the combination ORT's x86 int8 kernels run fastest.
    quantize_static(str(prepared), str(out), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def set_onnx_temperature(model: str | os.PathLike, out: str | os.PathLike, temperature: float) -> Path:
    """A copy of an ONNX export (``out`` may be ``model`` itself) whose metadata holds ``temperature``."""
    import onnx

    proto = onnx.load(str(model))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != "temperature"]
    del proto.metadata_props[:]
    for key, value in [*kept, ("temperature", str(temperature))]:
        proto.metadata_props.add(key=key, value=value)
    write_atomic(out, lambda staged: onnx.save(proto, staged))
    return Path(out)


def cached_onnx(checkpoint: str | os.PathLike, ckpt: dict | None = None) -> Path:
    """The fp32 ONNX export of a checkpoint, made once and kept in the cache (keyed by the file's
    SHA-256), so that ONNX Runtime can run any checkpoint without an explicit export step."""
    from ferkit.data import cache_dir

    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:24]
    path = cache_dir() / "onnx" / f"{digest}.onnx"
    if not path.is_file():
        export_onnx(checkpoint, path, ckpt=ckpt)
    return path


def export_torchscript(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A frozen TorchScript copy of a checkpoint (fp32), loadable from C++ with ``torch::jit::load``.
    (torch 2.13 marks TorchScript deprecated; LibTorch still loads it.)"""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.freeze(torch.jit.trace(model, torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(out), _extra_files={"class_names.json": json.dumps(list(ckpt["class_names"]))})
    return out


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
