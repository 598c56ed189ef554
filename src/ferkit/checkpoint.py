"""Saving and safely loading checkpoints.

A training checkpoint is a dict of tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)``: nothing in it can run code. Loading never unpickles
arbitrary objects, and every way a file can be wrong (missing, truncated, a pickle that wants to run
code, another architecture or class count) raises :class:`CheckpointError` naming the file and the
problem.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ferkit.data import class_mapping, class_names
from ferkit.model import FerResNet18, create_model

FORMAT = "ferkit-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used."""


def publish(staged: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a fully written temporary file onto ``path``, with the permissions a plain ``open``
    would have given it (``mkstemp`` makes files only their owner can read)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staged, 0o666 & ~mask)
    os.replace(staged, path)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(temporary_path)`` beside ``path``, then rename it over ``path`` (mode 0644): an
    interrupted write leaves the old file intact and no half-written one behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`write_atomic`."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def make_checkpoint(
    model: FerResNet18,
    *,
    epoch: int,
    val_accuracy: float,
    config: dict[str, Any],
    optimizer_state: dict | None = None,
    scheduler_state: dict | None = None,
    half: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild, evaluate and resume a model, as weights-only-loadable values.

    ``half`` stores floating-point weights as fp16 (a compact, inference-only copy).
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": {"arch": "resnet18", "num_classes": model.num_classes,
                         "in_channels": model.in_channels, "stem": model.stem,
                         **({"fine_to_class": model.fine_to_class} if model.fine_to_class else {}),
                         **({"equalize": True} if model.equalize else {})},
        "model_state_dict": state,
        "epoch": int(epoch),
        "val_accuracy": float(val_accuracy),
        "class_names": list(class_names(model.num_classes)),
        "class_mapping": class_mapping(model.num_classes),
        "config": config,
    }
    if optimizer_state is not None:
        ckpt["optimizer_state_dict"] = optimizer_state
    if scheduler_state is not None:
        ckpt["scheduler_state_dict"] = scheduler_state
    ckpt.update(extra or {})
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check that it is a ferkit ResNet-18.

    A bare state dict (e.g. saved with ``torch.save(model.state_dict())``) is accepted too: its
    class count and stem are read off the weights' shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):  # torch's zip format, or a raw pickle
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (unrecognized file header {magic!r})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests retrying with weights_only=False: exactly what must not be done here
        # with a file of unknown origin, so only its diagnosis is kept
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+Please use|\n\n|$)", str(e), re.S)
        first = " ".join(found.group(1).split())[:200] if found else "objects other than tensors and plain values"
        raise CheckpointError(
            f"{path}: refused: the file holds objects that only a full unpickle (code execution) could "
            f"load, and ferkit loads weights only ({first})"
        ) from None
    except Exception as e:  # torch.load fails in many ways (RuntimeError, KeyError, EOFError...) on bad bytes
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint; truncated or corrupt? ({first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    if "model_state_dict" not in obj:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = {"model_state_dict": obj}
        else:
            raise CheckpointError(f"{path}: no 'model_state_dict' (keys: {sorted(map(str, obj))[:10]})")
    state = obj["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'model_state_dict' is not a dict of tensors")
    broken = next((name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if broken is not None:
        raise CheckpointError(f"{path}: weights hold NaN or infinite values ({broken}); the file is damaged")
    cfg = obj.get("model_config") or _infer_model_config(path, state)
    if cfg.get("arch", "resnet18") != "resnet18":
        raise CheckpointError(f"{path}: architecture {cfg.get('arch')!r}, ferkit runs 'resnet18'")
    obj["model_config"] = cfg
    obj.setdefault("class_names", list(class_names(cfg["num_classes"])) if cfg["num_classes"] in (4, 7) else [])
    if len(obj["class_names"]) != cfg["num_classes"]:
        raise CheckpointError(
            f"{path}: {cfg['num_classes']} outputs but {len(obj['class_names'])} class names"
        )
    temperature = obj.setdefault("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise CheckpointError(f"{path}: temperature must be a positive number, found {temperature!r}")
    return obj


def average_checkpoints(paths: list[str | os.PathLike]) -> dict[str, Any]:
    """The uniform average of several checkpoints of one architecture (a "model soup", Wortsman et al.
    2022): every floating-point tensor averaged, batch-norm statistics included; integer buffers and
    everything else (config, class names) taken from the first. Its temperature is the first's and
    should be refitted (``ferkit calibrate``); ``soup`` lists the files averaged.

    Raises :class:`CheckpointError` naming the file whose model or tensors differ from the first's.
    """
    if len(paths) < 2:
        raise CheckpointError(f"a soup needs at least two checkpoints, got {len(paths)}")
    ckpts = [load_checkpoint(p) for p in paths]
    first, state = ckpts[0], ckpts[0]["model_state_dict"]
    for path, ckpt in zip(paths[1:], ckpts[1:], strict=True):
        other = ckpt["model_state_dict"]
        if ckpt["model_config"] != first["model_config"] or other.keys() != state.keys() \
                or any(other[k].shape != v.shape for k, v in state.items()):
            raise CheckpointError(f"{path}: not the same model as {paths[0]} ({ckpt['model_config']} against "
                                  f"{first['model_config']}), so the two cannot be averaged")
    averaged = {k: (torch.stack([c["model_state_dict"][k].float() for c in ckpts]).mean(0) if v.is_floating_point()
                    else v.clone())
                for k, v in state.items()}
    keep = {k: v for k, v in first.items() if k not in ("optimizer_state_dict", "scheduler_state_dict")}
    return {**keep, "model_state_dict": averaged, "soup": [str(p) for p in paths]}


def _infer_model_config(path: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    if "fc.weight" not in state or "conv1.weight" not in state:
        raise CheckpointError(f"{path}: not a ResNet-18 state dict (no conv1.weight / fc.weight)")
    conv1 = state["conv1.weight"]
    return {"arch": "resnet18", "num_classes": int(state["fc.weight"].shape[0]),
            "in_channels": int(conv1.shape[1]), "stem": "imagenet" if conv1.shape[-1] == 7 else "cifar"}


def model_from_checkpoint(
    ckpt: dict[str, Any], path: str | os.PathLike = "<checkpoint>", num_classes: int | None = None
) -> FerResNet18:
    """Build the model a loaded checkpoint describes and load its weights (as fp32).

    ``num_classes``, if given, must match the checkpoint: a 7-class file where a 4-class model is
    expected is an error, not a silent mismatch.
    """
    cfg = ckpt["model_config"]
    if num_classes is not None and cfg["num_classes"] != num_classes:
        raise CheckpointError(f"{path}: a {cfg['num_classes']}-class model, expected {num_classes} classes")
    if cfg.get("in_channels", 1) != 1:
        raise CheckpointError(f"{path}: the model takes {cfg['in_channels']} input channels, ferkit feeds 1")
    try:
        model = create_model(cfg["num_classes"], stem=cfg.get("stem", "imagenet"),
                             fine_to_class=cfg.get("fine_to_class"), equalize=bool(cfg.get("equalize", False)))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model_state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise CheckpointError(f"{path}: weights do not fit a ferkit ResNet-18 ({detail})") from None
    return model
