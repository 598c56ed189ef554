"""Exports of a checkpoint: fp16 weights, ONNX (fp32, or int8 by static quantization) and TorchScript.

    export_weights(checkpoint, "model_fp16.pt")                          # weights and metadata only
    export_onnx(checkpoint, "model.onnx")                                 # fp32, dynamic batch
    export_onnx(checkpoint, "model_int8.onnx", calibration=calibration_faces("fer2013.csv.gz"))
    export_torchscript(checkpoint, "model.torchscript")                   # for LibTorch / C++

ONNX files are protobuf, not pickles: loading one runs no code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ferkit.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_atomic, write_atomic
from ferkit.data import IMAGE_SIZE, load_fer2013

ONNX_INPUT, ONNX_OUTPUT = "faces", "logits"
ONNX_OPSET = 17
CALIBRATION_BATCH = 64


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    calibration: np.ndarray | None = None,
    ckpt: dict | None = None,
    progress: bool = False,
    reduce_range: bool = True,
) -> Path:
    """Export a checkpoint to ONNX (dynamic batch, class names in the metadata).

    ``calibration``: uint8 faces (N, 48, 48), for example a few thousand FER2013 training images:
    given, the model is quantized to int8 (QDQ, per-channel 7-bit weights), with activation ranges
    measured on them. About four times smaller, and faster on CPUs with VNNI (on these Zen 4 cores,
    ``benchmarks/inference_speed.py``: 4.5x at batch 1, 3.1x at batch 64). ``ckpt``: the checkpoint
    already loaded, if it is. ``progress``: a bar over the calibration batches, on stderr.
    ``reduce_range=False``: full 8-bit weights, whose products CPUs without VNNI saturate; only to
    measure that (``benchmarks/int8.py``).
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
            fp32 = _quantize_int8(fp32, Path(tmp) / "int8.onnx", calibration, progress, reduce_range)
            metadata["quantization"] = "int8"
        proto = onnx.load(str(fp32))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        write_atomic(out, lambda staged: onnx.save(proto, staged))  # no half-written model if interrupted
    return out


def _quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, progress: bool, reduce_range: bool) -> Path:
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
    # reduce_range: weights in 7 bits. CPUs with AVX2 but no VNNI multiply uint8 by int8 with VPMADDUBSW, whose
    # pairwise sums saturate at 16 bits with full-range weights (ONNX Runtime's quantization guide); the bundled
    # fast lost 2.1 points of PublicTest and 5.0 of ckplus-dev balanced to it on a Zen 3 core, 0.1 and 0.3 with
    # 7 bits (reports/int8/README.md): 2 x 255 x 64 fits in 16 bits, so no kernel saturates.
    quantize_static(str(prepared), str(out), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=_before_first_conv(prepared))
    return out


def _before_first_conv(model: Path) -> list[str]:
    """The nodes that run before the network's first convolution: preprocessing inside the model
    (histogram equalization's histogram and cumulative counts, up to 2,304 per level, would lose their
    precision in 8 bits), kept in float. None for a model without it."""
    import onnx

    names = []
    for node in onnx.load(str(model)).graph.node:  # ONNX keeps nodes in topological order
        if node.op_type == "Conv":
            break
        names.append(node.name)
    return names


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


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A compact inference copy of a checkpoint: fp16 weights and metadata, no optimizer state."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    kept = {key: ckpt[key] for key in ("temperature", "logit_adjustment") if key in ckpt}
    save_atomic(make_checkpoint(model, epoch=ckpt.get("epoch", 0), val_accuracy=ckpt.get("val_accuracy", 0.0),
                                config=ckpt.get("config", {}), half=True, extra=kept), out)
    return Path(out)


def calibration_faces(data: str | os.PathLike, count: int = 2048) -> np.ndarray:
    """``count`` FER2013 Training faces drawn with a fixed seed, to calibrate an int8 export (the same
    file gives the same int8 model)."""
    pixels, _ = load_fer2013(data).split("Training")
    pick = np.random.default_rng(0).permutation(len(pixels))[:count]
    return pixels[np.sort(pick)]
