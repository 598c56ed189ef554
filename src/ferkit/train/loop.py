"""The training loop: distributed setup, ``train_one_epoch`` and ``train``, whose steps are named:
``prepare_run`` (the output folder, ``--resume``), ``resume_state``, ``save_epoch`` (checkpoints) and
``finish_run`` (calibration, PrivateTest).

    ferkit train --data fer2013.csv.gz --out models/                    # the seed recipe
    ferkit train --recipe cpu --data fer2013.csv.gz --out runs/cpu       # another named recipe
    torchrun --nproc-per-node 4 -m ferkit train --data ... --out ...     # data-parallel, same flags

The whole training split sits on the training device as one uint8 tensor; each step gathers a
batch, scales it to [0, 1] and augments it there in batched tensor operations (``train.batches``,
``train.augment``). ``--pipeline dataloader`` swaps in the classic per-sample ``Dataset`` +
``DataLoader`` instead. The best epoch on PublicTest (or the last, ``--keep last``) is
checkpointed; ``last.pth`` is written (atomically) after every epoch so ``--resume`` can continue
an interrupted run; at the end the kept weights are calibrated (a temperature fitted on
PublicTest, stored in the checkpoint) and scored on PrivateTest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ferkit.calibration import fit_view_temperature
from ferkit.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_atomic
from ferkit.data import Fer2013Arrays, class_names, describe_splits, load_fer2013
from ferkit.defaults import DEFAULT_TTA
from ferkit.device import channels_last, native_bf16, resolve_device, resolve_precision, uses_bf16
from ferkit.evaluation import classification_metrics, plot_history, predict_logits, write_reports
from ferkit.model import count_parameters
from ferkit.train.augment import augment_sample, mix_batch
from ferkit.train.batches import create_dataloaders, hard_labels, split_tensors, tensor_batches, training_targets
from ferkit.train.config import RUN_FIELDS, TrainConfig, check_config
from ferkit.train.parts import TrainingParts, build_training

BEST_CHECKPOINT = "fer_resnet18_best.pth"
LAST_CHECKPOINT = "last.pth"


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device


@dataclass
class RunState:
    """What the loop carries from epoch to epoch (saved in ``last.pth`` for ``--resume``)."""

    epoch: int = 0
    best_accuracy: float = -1.0
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {
        k: [] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds")})


def train_one_epoch(parts: TrainingParts, batches, num_batches, cfg, mix_rng, aug, device, desc="", show=False,
                 model: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the training batches; returns the mean loss and accuracy as 0-dim tensors on
    the device. ``model`` runs the steps: ``parts.model`` itself, or that model wrapped (DDP,
    ``torch.compile``). Nothing in it waits for the device (except the progress bar's refresh every
    50 steps, when ``show``): reading the results does, once an epoch."""
    model = parts.model if model is None else model
    optimizer, loss_fn, ema = parts.optimizer, parts.loss_fn, parts.ema
    model.train()
    amp, layout = uses_bf16(cfg.precision, device), channels_last(cfg.layout, cfg.precision, device)
    # Running sums stay on the device: the host syncs only when the progress bar is refreshed.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(batches, total=num_batches, desc=desc, leave=False, mininterval=1.0, dynamic_ncols=True,
               disable=not show)
    for step, (x, y) in enumerate(bar, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if layout:
            x = x.contiguous(memory_format=torch.channels_last)
        mixing = cfg.mixup > 0 or cfg.cutmix > 0
        if mixing:
            x, y, y_b, lam = mix_batch(x, y, mix_rng, cfg.mixup, cfg.cutmix, aug)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            logits = model(x, merge=False).float()  # the labels being fitted (fine ones with fine_labels)
        loss = loss_fn(logits, y)
        if mixing:
            loss = lam * loss + (1 - lam) * loss_fn(logits, y_b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if parts.per_step:
            parts.scheduler.step()
        if ema is not None:
            ema.update_parameters(parts.model)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == hard_labels(y)).sum()
        seen += len(y)
        if show and (step % 50 == 0 or step == num_batches):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _score(model, images, labels, cfg, device, tta) -> tuple[float, float, torch.Tensor]:
    logits = predict_logits(model, images, cfg.eval_batch_size, device, tta, uses_bf16(cfg.precision, device))
    y = labels.cpu()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item(), logits


@dataclass
class RunRandomness:
    """The run's random streams after the seed: batch order, augmentation (on the device), mixing,
    and the DataLoader's order with ``--pipeline dataloader``; saved in ``last.pth`` for ``--resume``."""

    shuffle: torch.Generator
    aug: torch.Generator
    mix: np.random.Generator
    loader: Any = None  # the DataLoader, for --pipeline dataloader

    def state(self) -> dict[str, Any]:
        state = {"shuffle": self.shuffle.get_state(), "aug": self.aug.get_state(), "torch": torch.get_rng_state(),
                 "mix": json.dumps(self.mix.bit_generator.state)}
        if self.loader is not None:
            state["loader"] = self.loader.generator.get_state()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        self.shuffle.set_state(state["shuffle"])
        self.aug.set_state(state["aug"])
        torch.set_rng_state(state["torch"])
        self.mix.bit_generator.state = json.loads(state["mix"])
        if self.loader is not None:
            self.loader.generator.set_state(state["loader"])


def prepare_run(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Check ``cfg.out`` (a folder; holding another run only with ``--resume`` or ``--overwrite``),
    remove the half-written saves of a killed run, and load ``last.pth`` for ``--resume``: its
    recipe replaces the flags' (a resumed run must be the same run). Returns the config to run
    and the resumed checkpoint (None for a new run)."""
    out = Path(cfg.out)
    last_path = out / LAST_CHECKPOINT
    check_config(cfg)
    if out.is_file():
        raise ValueError(f"--out {out} is a file, not a folder")
    held = [p.name for p in (last_path, out / BEST_CHECKPOINT) if p.is_file()]
    if held and not (cfg.resume or cfg.overwrite):
        raise ValueError(f"--out {out} holds another run ({', '.join(held)}): pass --resume to continue it or "
                         "--overwrite to replace it, or choose another folder")
    for orphan in out.glob("*.pth*.tmp") if out.is_dir() else ():  # saves a killed run left half-written
        orphan.unlink(missing_ok=True)
    resumed = load_checkpoint(last_path) if cfg.resume and last_path.is_file() else None
    if cfg.resume and resumed is None:
        print(f"--resume: no {last_path} yet, starting from scratch")
    if resumed is not None:
        # (a field newer than the run takes its seed default: the behaviour before the field existed)
        defaults = {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k not in RUN_FIELDS}
        saved = {k: v for k, v in resumed["config"].items() if k not in RUN_FIELDS}
        kept = {**defaults, **saved}
        resumed_cfg = dataclasses.replace(cfg, **kept)
        ignored = [f"--{k.replace('_', '-')} {getattr(cfg, k)!r} (keeps {getattr(resumed_cfg, k)!r})" for k in kept
                   if getattr(cfg, k) != getattr(resumed_cfg, k)]
        if ignored:
            print(f"--resume continues the run in {out} as it was configured, so these flags are ignored: "
                  + ", ".join(ignored))
        cfg = resumed_cfg
    check_config(cfg)
    return cfg, resumed


def resume_state(resumed: dict[str, Any], parts: TrainingParts, randomness: RunRandomness) -> RunState:
    """Put a resumed run's weights, optimizer, schedule, EMA and random streams back; its loop state."""
    parts.model.load_state_dict(resumed["model_state_dict"])
    parts.optimizer.load_state_dict(resumed["optimizer_state_dict"])
    parts.scheduler.load_state_dict(resumed["scheduler_state_dict"])
    if parts.ema is not None:
        parts.ema.load_state_dict(resumed["ema_state_dict"])
    randomness.restore(resumed["rng_state"])
    return RunState(**resumed["run_state"])


def save_epoch(out: Path, parts: TrainingParts, state: RunState, config: dict[str, Any], randomness: RunRandomness,
               val_accuracy: float, kept: bool) -> None:
    """The epoch's checkpoints, each written atomically: the weights that are scored (the EMA's
    where there is one) as the best when the run keeps this epoch (``--keep``), and ``last.pth``
    (everything ``--resume`` needs) always."""
    optimizer, scheduler, ema = parts.optimizer, parts.scheduler, parts.ema
    if kept:
        save_atomic(make_checkpoint(ema.module if ema is not None else parts.model, epoch=state.epoch,
                                    val_accuracy=val_accuracy, config=config, optimizer_state=optimizer.state_dict(),
                                    scheduler_state=scheduler.state_dict()), out / BEST_CHECKPOINT)
    extra = {"run_state": dataclasses.asdict(state), "rng_state": randomness.state()}
    if ema is not None:
        extra["ema_state_dict"] = ema.state_dict()
    save_atomic(make_checkpoint(parts.model, epoch=state.epoch, val_accuracy=val_accuracy, config=config,
                                optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(),
                                extra=extra), out / LAST_CHECKPOINT)


def finish_run(out: Path, cfg: TrainConfig, state: RunState, arrays: Fer2013Arrays, x_val: torch.Tensor,
               y_val: torch.Tensor, device: torch.device, processes: int, log) -> dict[str, Any]:
    """After the last epoch: the curves, the best weights calibrated (the temperature that makes their
    PublicTest probabilities honest, fitted on the logits EmotionPredictor computes: fp32, each of its
    default test-time views; stored in the checkpoint), and scored on PrivateTest exactly as
    ``ferkit evaluate`` would (and on PublicTest the same way where the per-epoch choice ran cheaper
    views). Returns the PrivateTest record (also ``metrics.json``)."""
    config = dataclasses.asdict(cfg)
    train_seconds = sum(state.history["epoch_seconds"])
    (out / "history.json").write_text(json.dumps(state.history, indent=2) + "\n")
    plot_history(state.history, out / "training_history.png")
    best_ckpt = load_checkpoint(out / BEST_CHECKPOINT)
    best = model_from_checkpoint(best_ckpt, out / BEST_CHECKPOINT).to(device)
    best_ckpt["temperature"] = fit_view_temperature(best, x_val, y_val.cpu().numpy(), DEFAULT_TTA,
                                                    cfg.eval_batch_size, device)
    save_atomic(best_ckpt, out / BEST_CHECKPOINT)
    log(f"temperature {best_ckpt['temperature']:g} (fitted on PublicTest, test-time views: {DEFAULT_TTA}) "
        f"stored in {BEST_CHECKPOINT}")
    public_accuracy = state.best_accuracy
    if cfg.epoch_tta != cfg.tta:
        _, public_accuracy, _ = _score(best, x_val, y_val, cfg, device, cfg.tta)
    x_test, y_test = split_tensors(arrays, "PrivateTest", cfg.classes, device, cfg.labels)
    _, _, logits = _score(best, x_test, y_test, cfg, device, cfg.tta)
    metrics = classification_metrics(y_test.cpu().numpy(), logits.argmax(1).numpy(), class_names(cfg.classes))
    record = write_reports(metrics, out, "PrivateTest", extra={
        "checkpoint": BEST_CHECKPOINT, "best_epoch": state.best_epoch, "val_accuracy": state.best_accuracy,
        "public_test_accuracy": public_accuracy, "tta": cfg.tta, "labels": cfg.labels,
        "train_seconds": round(train_seconds, 1), "device": str(device), "processes": processes,
        "torch": torch.__version__, "config": config,
    })
    log(f"{cfg.keep} epoch {state.best_epoch}: PublicTest {public_accuracy:.4f}, PrivateTest "
        f"{metrics['accuracy']:.4f} (TTA {cfg.tta}; {train_seconds / 60:.1f} min of training) -> {out}")
    return record


def train(cfg: TrainConfig, arrays: Fer2013Arrays | None = None) -> dict[str, Any]:
    """Run one training job; writes the checkpoints, curves and PrivateTest reports to ``cfg.out``.

    Returns the PrivateTest metrics record (also saved as ``metrics.json``).
    """
    cfg, resumed = prepare_run(cfg)
    out = Path(cfg.out)
    ddp, device = setup_distributed(resolve_device(cfg.device))
    show = ddp.main
    log = print if show else (lambda *a, **k: None)
    if cfg.precision == "bf16" and not native_bf16(device):
        log(f"warning: --precision bf16 on a {device.type} without bf16 arithmetic is emulated, about 10x slower than "
            "fp32 (--precision auto picks what this device computes fastest)")
    # the checkpoint records the precision that ran, not "auto", so scoring it later repeats it
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if arrays is None:
        arrays = load_fer2013(cfg.data, skip_bad_rows=cfg.skip_bad_rows, verbose=show)
    log(f"data: {cfg.data} ({cfg.classes} classes)\n{describe_splits(arrays, cfg.classes)}")

    x_train, y_train = split_tensors(arrays, "Training", cfg.label_classes, device)
    train_targets = training_targets(arrays, y_train, cfg)
    x_val, y_val = split_tensors(arrays, "PublicTest", cfg.classes, device, cfg.labels)
    for split, rows in (("Training", len(y_train)), ("PublicTest", len(y_val))):
        if rows == 0:
            raise ValueError(f"{cfg.data}: no {split} rows{' with a FER+ majority' if split != 'Training' else ''}; "
                             "training needs Training rows to fit and PublicTest rows to choose the checkpoint")
    per_rank = cfg.batch_size // ddp.world
    steps_per_epoch = (len(y_train) // cfg.batch_size if ddp.world > 1 else math.ceil(len(y_train) / cfg.batch_size))
    parts = build_training(cfg, device, y_train, steps_per_epoch)
    model, optimizer, scheduler, ema = parts.model, parts.optimizer, parts.scheduler, parts.ema
    config = dataclasses.asdict(cfg)
    log(f"model: ResNet-18 ({cfg.stem} stem), {count_parameters(model):,} parameters, on {device}"
        f"{', fitting the 7 FER2013 labels merged into 4 classes' if model.fine_to_class else ''}"
        f"{f' x {ddp.world} processes ({per_rank} images each per step)' if ddp.world > 1 else ''}"
        f"{f'; starting from the weights of {cfg.init} (sha256 {parts.init_sha256})' if cfg.init else ''}")
    log("config: " + json.dumps(config))

    randomness = RunRandomness(torch.Generator().manual_seed(cfg.seed),
                               torch.Generator(device=device).manual_seed(cfg.seed + 1 + ddp.rank),
                               np.random.default_rng(cfg.seed + 2))
    if cfg.pipeline == "dataloader":
        randomness.loader = create_dataloaders(
            arrays, per_rank, cfg.label_classes, cfg.workers, cfg.seed,
            transform=partial(augment_sample, flip=cfg.flip, rotation=cfg.rotation, min_crop=cfg.min_crop,
                              shift=cfg.shift),
        )["train"]
    state = RunState()
    if resumed is not None:
        state = resume_state(resumed, parts, randomness)
        log(f"resumed from {out / LAST_CHECKPOINT} after epoch {state.epoch}")

    train_model = model
    if ddp.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    eval_model = ema.module if ema is not None else model

    started = time.perf_counter()
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        if randomness.loader is not None:
            batches = randomness.loader
        else:
            batches = tensor_batches(x_train, train_targets, cfg, randomness.shuffle, randomness.aug, ddp.rank,
                                     ddp.world)
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = (t.item() for t in train_one_epoch(
            parts, batches, steps_per_epoch, cfg, randomness.mix, randomness.aug, device,
            f"epoch {epoch}/{cfg.epochs}", show, train_model))
        if ddp.world > 1:  # keep every rank's batch-norm statistics equal to rank 0's
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        val_loss, val_acc, _ = _score(eval_model, x_val, y_val, cfg, device, cfg.epoch_tta)
        if not parts.per_step:
            scheduler.step()
        seconds = time.perf_counter() - t0
        for key, value in zip(state.history, (train_loss, train_acc, val_loss, val_acc, lr, seconds), strict=True):
            state.history[key].append(value)
        state.epoch = epoch
        kept = val_acc > state.best_accuracy or cfg.keep == "last"  # the weights fer_resnet18_best.pth holds
        if kept:
            state.best_accuracy, state.best_epoch, state.epochs_without_improvement = val_acc, epoch, 0
        else:
            state.epochs_without_improvement += 1
        if ddp.main:
            save_epoch(out, parts, state, config, randomness, val_acc, kept)
        log(f"epoch {epoch:>3}/{cfg.epochs} | train loss {train_loss:.4f} acc {train_acc:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}{' *' if kept else ''} | lr {lr:.2e} | {seconds:.1f}s",
            flush=True)
        if cfg.early_stopping and state.epochs_without_improvement >= cfg.early_stopping:
            log(f"early stopping: no better PublicTest accuracy for {cfg.early_stopping} epochs")
            break
    log(f"trained in {(time.perf_counter() - started) / 60:.1f} min this session")

    record = finish_run(out, cfg, state, arrays, x_val, y_val, device, ddp.world, log) if ddp.main else {}
    if ddp.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return record
