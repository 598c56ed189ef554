"""The parts of a run, built from its config: model, optimizer, learning-rate schedule, loss and EMA."""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from ferkit.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from ferkit.data import class_mapping
from ferkit.device import channels_last
from ferkit.infer.models import resolve_model
from ferkit.model import FerResNet18, create_model
from ferkit.train.config import TrainConfig


def fine_to_class(cfg: TrainConfig) -> list[int] | None:
    """The model's fine-label merge: FER2013's 7 labels into the 4 classes with ``fine_labels``."""
    return class_mapping(cfg.classes) if cfg.fine_labels and cfg.classes == 4 else None


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """The learning-rate schedule and whether it steps per epoch (``step``) or per batch."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), "epoch"
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        pct = min(cfg.warmup_epochs / cfg.epochs, 0.5) if cfg.warmup_epochs > 0 else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total,
                                                   pct_start=pct), "step"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"


def weighted_smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                                    smoothing: float) -> torch.Tensor:
    """``F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)`` for class indices,
    without the ``masked_select`` with which PyTorch's own makes the host wait for the GPU every step."""
    log_probs = logits.log_softmax(1)
    sample_weight = weight[target]
    total = sample_weight.sum()  # the mean is weighted, as nll_loss's is
    nll = -(log_probs.gather(1, target[:, None]).squeeze(1) * sample_weight).sum() / total
    uniform = -(log_probs * weight).sum() / total
    return (1 - smoothing) * nll + smoothing / logits.shape[1] * uniform


def make_loss(cfg: TrainConfig, train_labels: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy or focal loss, with optional label smoothing and inverse-frequency weights."""
    weight = None
    if cfg.class_weights:
        counts = torch.bincount(train_labels, minlength=cfg.label_classes).float()
        weight = (counts.sum() / (cfg.label_classes * counts.clamp(min=1))).to(train_labels.device)
    if cfg.loss == "ce":  # targets smoothed toward FER+'s votes (--smoothing-prior ferplus) come smoothed already
        smoothing = cfg.label_smoothing if cfg.smoothing_prior == "uniform" else 0.0
        if weight is not None and smoothing > 0 and not cfg.soft_targets:  # class indices
            return partial(weighted_smoothed_cross_entropy, weight=weight, smoothing=smoothing)
        return partial(F.cross_entropy, weight=weight, label_smoothing=smoothing)

    def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, weight=weight, label_smoothing=cfg.label_smoothing, reduction="none")
        p_true = torch.exp(-F.cross_entropy(logits, target, reduction="none"))
        return ((1 - p_true) ** cfg.focal_gamma * ce).mean()

    return focal


class EMA(torch.nn.Module):
    """Exponential moving average of a model's weights and buffers, updated after every step.

    The same average as ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` (and
    the same ``state_dict`` keys, ``module.*`` and ``n_averaged``), but that class copies its update
    count from the CPU to the GPU at every step, a copy the host waits for; here the count stays on
    the CPU. Integer buffers (batch norm's step counters) are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))  # on the CPU: reading it costs nothing

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        ema = [*self.module.parameters(), *self.module.buffers()]
        current = [t.detach() for t in (*model.parameters(), *model.buffers())]
        first = int(self.n_averaged) == 0
        floats = [(e, c) for e, c in zip(ema, current, strict=True) if e.is_floating_point()]
        if floats and not first:
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1 - self.decay)
        for e, c in zip(ema, current, strict=True):
            if first or not e.is_floating_point():
                e.copy_(c)
        self.n_averaged += 1


def load_initial_weights(model: FerResNet18, init: str) -> str:
    """Put the weights of ``init`` (a bundled model's name, or a checkpoint or weights file written by
    ferkit) into ``model``, refusing a network of another shape than the run's (``--init``). Returns
    the SHA-256 of the file they came from (the file behind a name changes when a new model ships)."""
    try:
        path = resolve_model(init)
        source = model_from_checkpoint(load_checkpoint(path), path)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise ValueError(f"--init {init}: {e}") from None
    shape = lambda m: dict(classes=m.num_classes, stem=m.stem, fine_labels=m.fine_to_class,  # noqa: E731
                           equalize=m.equalize)
    if shape(source) != shape(model):
        raise ValueError(f"--init {init}: its network ({shape(source)}) is not the run's ({shape(model)}); "
                         "choose a recipe and flags that build the same network")
    model.load_state_dict(source.state_dict())
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class TrainingParts:
    """What a run trains and how: the model, its optimizer, learning-rate schedule, loss and EMA."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_step: bool  # the schedule steps after every batch (else after every epoch)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ema: EMA | None
    init_sha256: str | None = None  # the file --init's weights came from


def build_training(cfg: TrainConfig, device: torch.device, train_labels: torch.Tensor,
                   steps_per_epoch: int) -> TrainingParts:
    """The parts of a run built from its config, as ``train``, the speed benchmark and the GPU tests
    use them: the model on ``device`` (channels_last where :func:`ferkit.device.channels_last` says;
    its initial weights drawn from torch's global generator, or ``--init``'s), then the optimizer,
    schedule, loss (class weights count ``train_labels``) and EMA."""
    model = create_model(cfg.classes, stem=cfg.stem, fine_to_class=fine_to_class(cfg),
                         zero_init_residual=cfg.zero_init_residual, equalize=cfg.equalize)
    init_sha256 = load_initial_weights(model, cfg.init) if cfg.init else None
    model = model.to(device)
    if channels_last(cfg.layout, cfg.precision, device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    scheduler, unit = make_scheduler(optimizer, cfg, steps_per_epoch)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    return TrainingParts(model, optimizer, scheduler, unit == "step", make_loss(cfg, train_labels), ema,
                         init_sha256)
