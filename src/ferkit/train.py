"""Train a ResNet-18 on FER2013 from random initialization.

    python -m ferkit.train --data fer2013.csv.gz --out models/      # the seed recipe
    ferkit train --data fer2013.csv.gz --epochs 2 --classes 7

The whole training split sits on the training device as one uint8 tensor; each step gathers a
batch, scales it to [0, 1] and augments it there in one batched resample (``ferkit.augment``).
``--pipeline dataloader`` swaps in the classic per-sample ``Dataset`` + ``DataLoader`` instead,
with the same augmentation. The best epoch on PublicTest is checkpointed, and at the end the best
weights are scored on PrivateTest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ferkit.augment import augment_batch, augment_sample
from ferkit.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_atomic
from ferkit.data import (
    Fer2013Arrays,
    class_names,
    create_dataloaders,
    describe_splits,
    load_fer2013,
    map_labels,
)
from ferkit.evaluation import classification_metrics, plot_history, predict_logits, write_reports
from ferkit.model import STEMS, count_parameters, create_model, resolve_device

BEST_CHECKPOINT = "fer_resnet18_best.pth"


@dataclass
class TrainConfig:
    """Every knob of a training run; a recipe is a named set of values for them."""

    data: str = "data/fer2013.csv"
    out: str = "models"
    recipe: str = "seed"
    classes: int = 4
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "step"  # step | none
    step_size: int = 7
    gamma: float = 0.1
    stem: str = "imagenet"
    flip: float = 0.5
    rotation: float = 10.0
    min_crop: float = 0.9
    pipeline: str = "tensor"  # tensor (batched, on device) | dataloader (per-sample)
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # DataLoader workers (dataloader pipeline)
    skip_bad_rows: bool = False
    eval_batch_size: int = 512


# A recipe fixes the fields that define its result; data, out, device and workers stay the user's.
RECIPES: dict[str, dict[str, Any]] = {
    # The original project's baseline: 20 epochs, batch 64, Adam 1e-3, StepLR(7, 0.1), cross-entropy,
    # flip 0.5, rotation +-10 degrees, random crop 90-100%, pixels in [0, 1], 7x7 ImageNet stem.
    "seed": dict(classes=4, epochs=20, batch_size=64, lr=1e-3, optimizer="adam", weight_decay=0.0,
                 schedule="step", step_size=7, gamma=0.1, stem="imagenet", flip=0.5, rotation=10.0,
                 min_crop=0.9, seed=0),
}

CHOICES = {"optimizer": ("adam", "sgd"), "schedule": ("step", "none"), "stem": STEMS,
           "pipeline": ("tensor", "dataloader"), "classes": (4, 7), "recipe": tuple(RECIPES)}


def resolve_config(recipe: str = "seed", **overrides: Any) -> TrainConfig:
    """The recipe's values, then any explicit overrides (``None`` means "not given")."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {sorted(RECIPES)}")
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}, "recipe": recipe}
    return TrainConfig(**values)


def split_tensors(arrays: Fer2013Arrays, split: str, num_classes: int, device: torch.device):
    """One split as a uint8 (N, 1, 48, 48) image tensor and int64 labels, on ``device``."""
    pixels, emotion = arrays.split(split)
    images = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1).to(device)
    labels = torch.from_numpy(map_labels(emotion, num_classes)).to(device)
    return images, labels


def tensor_batches(
    images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, shuffle: torch.Generator,
    aug: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented float batches, made on the images' device."""
    order = torch.randperm(len(labels), generator=shuffle).to(images.device)
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        x = images[idx].float().div_(255)
        yield augment_batch(x, aug, cfg.flip, cfg.rotation, cfg.min_crop), labels[idx]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """A per-epoch learning-rate schedule."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def _train_epoch(model, batches, num_batches, optimizer, device, desc) -> tuple[float, float]:
    """One pass over the training batches; returns mean loss and accuracy."""
    model.train()
    # Running sums stay on the device: no host sync per step, only when the bar is refreshed.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = tqdm(batches, total=num_batches, desc=desc, leave=False, mininterval=1.0, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if step % 20 == 0 or step == num_batches:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    return loss_sum.item() / seen, correct.item() / seen


@torch.no_grad()
def _score(model, images, labels, cfg, device) -> tuple[float, float, torch.Tensor]:
    logits = predict_logits(model, images, cfg.eval_batch_size, device)
    y = labels.cpu()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item(), logits


def train(cfg: TrainConfig, arrays: Fer2013Arrays | None = None) -> dict[str, Any]:
    """Run one training job; writes the checkpoint, curves and PrivateTest reports to ``cfg.out``.

    Returns the PrivateTest metrics record (also saved as ``metrics.json``).
    """
    for field, allowed in CHOICES.items():
        if getattr(cfg, field) not in allowed:
            raise ValueError(f"--{field.replace('_', '-')} must be one of {allowed}, got {getattr(cfg, field)!r}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if arrays is None:
        arrays = load_fer2013(cfg.data, skip_bad_rows=cfg.skip_bad_rows, verbose=True)
    print(f"data: {cfg.data} ({cfg.classes} classes)\n{describe_splits(arrays, cfg.classes)}")

    x_train, y_train = split_tensors(arrays, "Training", cfg.classes, device)
    x_val, y_val = split_tensors(arrays, "PublicTest", cfg.classes, device)
    model = create_model(cfg.classes, stem=cfg.stem).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    config = dataclasses.asdict(cfg)
    print(f"model: ResNet-18 ({cfg.stem} stem), {count_parameters(model):,} parameters, on {device}")
    print("config: " + json.dumps(config))

    shuffle = torch.Generator().manual_seed(cfg.seed)
    aug = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    if cfg.pipeline == "dataloader":
        loader = create_dataloaders(
            arrays, cfg.batch_size, cfg.classes, cfg.workers, cfg.seed,
            transform=partial(augment_sample, flip=cfg.flip, rotation=cfg.rotation, min_crop=cfg.min_crop),
        )["train"]
    num_batches = math.ceil(len(y_train) / cfg.batch_size)

    history: dict[str, list[float]] = {k: [] for k in
                                       ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")}
    best_acc, best_epoch = -1.0, 0
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = loader if cfg.pipeline == "dataloader" else tensor_batches(x_train, y_train, cfg, shuffle, aug)
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = _train_epoch(model, batches, num_batches, optimizer, device,
                                             f"epoch {epoch}/{cfg.epochs}")
        val_loss, val_acc, _ = _score(model, x_val, y_val, cfg, device)
        scheduler.step()
        for key, value in zip(history, (train_loss, train_acc, val_loss, val_acc, lr), strict=True):
            history[key].append(value)
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch = val_acc, epoch
            save_atomic(make_checkpoint(model, epoch=epoch, val_accuracy=val_acc, config=config,
                                        optimizer_state=optimizer.state_dict(),
                                        scheduler_state=scheduler.state_dict()), out / BEST_CHECKPOINT)
        print(f"epoch {epoch:>3}/{cfg.epochs} | train loss {train_loss:.4f} acc {train_acc:.4f} | "
              f"val loss {val_loss:.4f} acc {val_acc:.4f}{' *' if improved else ''} | lr {lr:.2e} | "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
    train_seconds = time.perf_counter() - started
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    plot_history(history, out / "training_history.png")

    # Score the best-on-PublicTest weights on PrivateTest, exactly as `ferkit evaluate` would.
    best = model_from_checkpoint(load_checkpoint(out / BEST_CHECKPOINT), out / BEST_CHECKPOINT).to(device)
    x_test, y_test = split_tensors(arrays, "PrivateTest", cfg.classes, device)
    _, _, logits = _score(best, x_test, y_test, cfg, device)
    metrics = classification_metrics(y_test.cpu().numpy(), logits.argmax(1).numpy(), class_names(cfg.classes))
    record = write_reports(metrics, out, "PrivateTest", extra={
        "checkpoint": BEST_CHECKPOINT, "best_epoch": best_epoch, "val_accuracy": best_acc,
        "train_seconds": round(train_seconds, 1), "device": str(device), "torch": torch.__version__,
        "config": config,
    })
    print(f"best epoch {best_epoch}: PublicTest {best_acc:.4f}, PrivateTest {metrics['accuracy']:.4f} "
          f"({train_seconds / 60:.1f} min) -> {out}")
    return record


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field; unset flags keep the recipe's value."""
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=f"(default: {default})")
        elif field.name == "recipe":
            parser.add_argument(flag, default="seed", choices=sorted(RECIPES), help="named recipe (default: seed)")
        else:
            parser.add_argument(flag, type=type(default), default=None, choices=CHOICES.get(field.name),
                                help=f"(seed default: {RECIPES['seed'].get(field.name, default)})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "recipe"}
    # data/out/device/workers are not recipe fields: fall back to TrainConfig's defaults
    return resolve_config(args.recipe, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferkit train", description=__doc__.split("\n\n")[0])
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    train(config_from_args(args))
    return 0


if __name__ == "__main__":
    import sys

    from ferkit.cli import main as cli_main

    raise SystemExit(cli_main(["train", *sys.argv[1:]]))
