"""A training run's configuration: every knob in one dataclass, recipes as named sets of its values.

Each field carries its help text, its allowed values (``choices``) and whether it says where and how
to run (``run``: not part of a recipe, and a resumed run may change it); ``ferkit train`` makes one
flag per field from them. How each recipe came to be: ``reports/<recipe>/README.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ferkit.defaults import LABEL_SETS, LAYOUTS, PRECISIONS, STEMS, TTA_MODES


def knob(default: Any, help: str, choices: tuple | None = None, run: bool = False,
         bounds: tuple[float | None, float | None] | None = None) -> Any:
    """A :class:`TrainConfig` field with its help text, allowed values (``choices``, or inclusive
    ``bounds``: (low, high), None for no limit) and kind."""
    return field(default=default, metadata={"help": help, "choices": choices, "run": run, "bounds": bounds})


@dataclass
class TrainConfig:
    """Every knob of a training run; a recipe is a named set of values for them (the defaults are
    the seed recipe: the original project's baseline)."""

    # where and how to run: not part of a recipe
    data: str = knob("data/fer2013.csv", "fer2013.csv, fer2013.csv.gz or .npz", run=True)
    out: str = knob("models", "folder for checkpoints, logs and reports", run=True)
    device: str = knob("auto", "auto (CUDA if available), cpu, cuda, cuda:1...", run=True)
    workers: int = knob(0, "DataLoader worker processes (--pipeline dataloader only)", run=True, bounds=(0, None))
    pipeline: str = knob("tensor", "tensor: batches made and augmented on the device; dataloader: the classic "
                         "per-sample Dataset + DataLoader", ("tensor", "dataloader"), run=True)
    compile: bool = knob(False, "torch.compile the model", run=True)
    layout: str = knob("auto", "memory layout of the model and its batches in training: auto (channels_last on "
                       "CPUs and with bf16), channels_last or contiguous", LAYOUTS, run=True)
    resume: bool = knob(False, "continue from <out>/last.pth (its recipe wins over the flags)", run=True)
    overwrite: bool = knob(False, "replace the run already in --out (without it, or --resume, an --out holding a "
                           "run is refused)", run=True)
    skip_bad_rows: bool = knob(False, "drop malformed CSV rows instead of stopping", run=True)
    eval_batch_size: int = knob(512, "batch size of validation and test scoring", run=True, bounds=(1, None))
    # the recipe
    recipe: str = knob("seed", "named recipe whose values the other flags override")
    seed: int = knob(0, "random seed of initialization, order and augmentation")
    classes: int = knob(4, "4 (angry, sad, happy, neutral), FER2013's 7 emotions, or FER+'s 8 (with --labels ferplus)",
                        (4, 7, 8))
    labels: str = knob("fer2013", "the label set: FER2013's own, or FER+'s ten annotators (their vote shares as "
                       "targets, their majority to choose and score)", LABEL_SETS)
    fine_labels: bool = knob(False, "fit FER2013's 7 labels and merge their probabilities into the 4 classes")
    stem: str = knob("imagenet", "network stem: imagenet (7x7 stride 2 + max-pool) or cifar (3x3, full 48x48)",
                     STEMS)
    zero_init_residual: bool = knob(False, "each residual block's last batch-norm scale starts at 0")
    init: str = knob("", "start from the weights of a model trained by ferkit (a bundled one's name, e.g. fast, or a "
                     "checkpoint or fp16 weights file) instead of random ones; its network must be the run's ('': "
                     "random initialization)")
    equalize: bool = knob(False, "histogram-equalize each face inside the network, in training and inference alike "
                          "(FER+'s reference preprocessing)")
    epochs: int = knob(20, "passes over the training split", bounds=(1, None))
    batch_size: int = knob(64, "images per step, over all processes under torchrun", bounds=(2, None))
    optimizer: str = knob("adam", "adam, adamw or sgd (Nesterov momentum)", ("adam", "adamw", "sgd"))
    lr: float = knob(1e-3, "learning rate (the peak of onecycle and cosine)")
    momentum: float = knob(0.9, "SGD momentum", bounds=(0, 1))
    weight_decay: float = knob(0.0, "weight decay", bounds=(0, None))
    schedule: str = knob("step", "learning-rate schedule: step (per epoch), cosine, onecycle or constant (per step)",
                         ("step", "cosine", "onecycle", "constant"))
    step_size: int = knob(7, "epochs between the step schedule's decays", bounds=(1, None))
    gamma: float = knob(0.1, "the step schedule's decay factor", bounds=(0, None))
    warmup_epochs: float = knob(0.0, "linear warm-up (cosine, constant) or the rise of onecycle, in epochs",
                                bounds=(0, None))
    loss: str = knob("ce", "ce (cross-entropy) or focal", ("ce", "focal"))
    focal_gamma: float = knob(2.0, "the focal loss's exponent", bounds=(0, None))
    label_smoothing: float = knob(0.0, "share of each target moved to the smoothing prior", bounds=(0, 1))
    smoothing_prior: str = knob("uniform", "what label smoothing moves toward: uniform, or ferplus (each image's "
                                "FER+ vote shares: --label-smoothing 0.5 mixes FER2013 and FER+ half and half)",
                                ("uniform", "ferplus"))
    teacher: tuple[str, ...] = knob((), "teachers of the bank (`ferkit teach`: reports/teachers/NAME ...): the mean "
                                    "of their probabilities for each Training image makes --teacher-weight of every "
                                    "target (none: no teacher)")
    teacher_weight: float = knob(0.5, "share of each target from --teacher: (1 - w) * the target without it + w * "
                                 "the teachers' probabilities", bounds=(0, 1))
    teacher_temperature: float = knob(1.0, "the temperature of the teachers' probabilities (each view's "
                                      "softmax(logits / T), averaged over views and teachers)", bounds=(0.05, 20))
    teacher_prior: str = knob("", "a teacher folder of the bank: each --teacher's probabilities are first reweighted, "
                              "one factor per class, so that their mean over Training is this one's ('': as they "
                              "are)")
    class_weights: bool = knob(False, "weight the loss by inverse class frequency")
    sampler: str = knob("shuffle", "shuffle, or balanced (classes drawn equally often)", ("shuffle", "balanced"))
    flip: float = knob(0.5, "probability of a horizontal flip", bounds=(0, 1))
    rotation: float = knob(10.0, "largest rotation, in degrees", bounds=(0, 180))
    min_crop: float = knob(0.9, "smallest share of the image's area a random crop keeps", bounds=(0.05, 1))
    shift: float = knob(0.0, "largest extra shift, as a share of the image's side", bounds=(0, 0.5))
    photometric: float = knob(0.0, "probability of each photometric effect (brightness, contrast, gamma, blur, "
                              "low resolution, noise)", bounds=(0, 1))
    erasing: float = knob(0.0, "random-erasing probability", bounds=(0, 1))
    mixup: float = knob(0.0, "mixup alpha (0: off)", bounds=(0, None))
    cutmix: float = knob(0.0, "cutmix alpha (0: off)", bounds=(0, None))
    ema: float = knob(0.0, "per-step decay of an average of the weights that validation and checkpoints use "
                      "(0: off)", bounds=(0, 0.9999))
    early_stopping: int = knob(0, "stop after this many epochs without a better PublicTest accuracy (0: off)",
                               bounds=(0, None))
    keep: str = knob("best", "which epoch's weights the run keeps (fer_resnet18_best.pth): the best PublicTest "
                     "accuracy, or the last epoch's (for short runs whose epochs differ by noise)", ("best", "last"))
    tta: str = knob("none", "test-time views scoring the chosen checkpoint", TTA_MODES)
    val_tta: str = knob("", "test-time views of the per-epoch PublicTest scoring that chooses the checkpoint "
                        "('': as --tta)", ("", *TTA_MODES))
    precision: str = knob("auto", "auto (bf16 autocast where the device computes in bf16), "
                          "bf16 or fp32", PRECISIONS)

    def __post_init__(self) -> None:
        # a saved config holds a list (JSON), a config of 0.4 and before one path or ""
        self.teacher = (self.teacher,) if isinstance(self.teacher, str) and self.teacher else tuple(self.teacher or ())

    @property
    def label_classes(self) -> int:
        """How many labels training fits: FER2013's seven with ``fine_labels``, else the task's."""
        return 7 if self.fine_labels else self.classes

    @property
    def soft_targets(self) -> bool:
        """Whether training fits probability vectors (FER+'s votes, a teacher's) rather than class indices."""
        return self.labels == "ferplus" or self.smoothing_prior == "ferplus" or bool(self.teacher)

    @property
    def epoch_tta(self) -> str:
        """The test-time augmentation of the per-epoch PublicTest scoring: ``val_tta``, else ``tta``."""
        return self.val_tta or self.tta


# A recipe fixes every field that defines its result; where and how to run stays the user's.
RECIPES: dict[str, dict[str, Any]] = {
    # The original project's baseline (the defaults): PrivateTest median 68.40% of 3 seeds (reports/seed-seeds).
    "seed": {},
    # 2 CPU cores, 30 min: bf16, batch 256, one-cycle AdamW, EMA, fine labels; 73.73%, median of 3 seeds (reports/cpu).
    # precision auto: bf16 where the CPU computes it (AVX512-BF16 or AMX, as on the machines of reports/cpu), else
    # fp32: emulated bf16 took 25 s a step on a Zen 3 core, fp32 2.3 s (reports/teachers/PLAN.md, fast-eq-p25).
    "cpu": dict(stem="imagenet", fine_labels=True, epochs=25, batch_size=256, optimizer="adamw", lr=4e-3,
                weight_decay=0.01, schedule="onecycle", warmup_epochs=3, label_smoothing=0.1, flip=0.5, rotation=10.0,
                min_crop=0.85, shift=0.05, erasing=0.0, ema=0.995, tta="tencrop_full", val_tta="flip",
                precision="auto"),
    # cpu with 0.3 of each target from FER+'s votes and camera effects: trained `fast7` and the first `fast` (r4); the
    # bundled `fast` is this recipe distilled from r4 (--teacher; reports/wild/fastkd: +2.3 points wild, +1.2 FER+).
    "fast": dict(stem="imagenet", fine_labels=True, epochs=25, batch_size=256, optimizer="adamw", lr=4e-3,
                 weight_decay=0.01, schedule="onecycle", warmup_epochs=3, label_smoothing=0.3,
                 smoothing_prior="ferplus", flip=0.5, rotation=10.0, min_crop=0.85, shift=0.05, photometric=0.1,
                 erasing=0.0, ema=0.995, tta="tencrop_full", val_tta="flip", precision="auto"),
    # One GPU: CIFAR stem, SGD, cosine, mixup, erasing, EMA; untuned, 78.55% in 3.7 min on an H200 (reports/best).
    "best": dict(stem="cifar", fine_labels=True, epochs=120, batch_size=256, optimizer="sgd", lr=0.1, momentum=0.9,
                 weight_decay=5e-4, schedule="cosine", warmup_epochs=3, label_smoothing=0.1, flip=0.5,
                 rotation=15.0, min_crop=0.75, shift=0.1, erasing=0.5, mixup=0.2, cutmix=0.0, ema=0.999,
                 tta="tencrop"),
    # The bundled `accurate` model's (issue 18): best with fast's targets (0.3 FER+ vote shares) and camera effects,
    # what reports/wild chose for faces that are not FER2013; not yet trained (no GPU since it was written).
    "accurate": dict(stem="cifar", fine_labels=True, epochs=120, batch_size=256, optimizer="sgd", lr=0.1,
                     momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup_epochs=3, label_smoothing=0.3,
                     smoothing_prior="ferplus", flip=0.5, rotation=15.0, min_crop=0.75, shift=0.1, photometric=0.1,
                     erasing=0.5, mixup=0.2, cutmix=0.0, ema=0.999, tta="tencrop"),
}

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["run"])


def resolve_config(recipe: str = "seed", **overrides: Any) -> TrainConfig:
    """TrainConfig's defaults (the seed recipe), then the recipe's values, then any explicit
    overrides (``None`` means "not given")."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {sorted(RECIPES)}")
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}, "recipe": recipe}
    return TrainConfig(**values)


def check_config(cfg: TrainConfig) -> None:
    """Refuse values a run cannot use, naming the flag."""
    for f in dataclasses.fields(cfg):
        allowed = f.metadata["choices"] or (tuple(RECIPES) if f.name == "recipe" else None)
        if allowed is not None and getattr(cfg, f.name) not in allowed:
            raise ValueError(f"--{f.name.replace('_', '-')} must be one of {allowed}, got {getattr(cfg, f.name)!r}")
        low, high = f.metadata["bounds"] or (None, None)
        value = getattr(cfg, f.name)
        if (low is not None and not value >= low) or (high is not None and not value <= high):
            limits = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"--{f.name.replace('_', '-')} must be {limits}, got {value!r}")
    if not cfg.lr > 0:
        raise ValueError(f"--lr must be above 0, got {cfg.lr!r}")
    if cfg.pipeline == "dataloader" and (cfg.sampler != "shuffle" or cfg.erasing or cfg.mixup or cfg.cutmix
                                         or cfg.photometric or cfg.soft_targets):
        raise ValueError("--pipeline dataloader runs the geometric augmentation and hard labels only; "
                         "use --pipeline tensor")
    if cfg.teacher_prior and not cfg.teacher:
        raise ValueError("--teacher-prior reweights the teachers of --teacher: give them")
    if cfg.soft_targets and cfg.loss == "focal":
        raise ValueError("FER+'s votes and --teacher make soft targets, which --loss focal does not take")
    if cfg.pipeline == "dataloader" and cfg.labels != "fer2013":
        raise ValueError("--pipeline dataloader trains on FER2013's labels only; use --pipeline tensor")
    if cfg.keep == "last" and cfg.early_stopping:
        raise ValueError("--keep last keeps the last epoch whatever PublicTest says: --early-stopping has nothing to "
                         "stop on")
    if cfg.classes == 8 and (cfg.labels != "ferplus" or cfg.fine_labels):
        raise ValueError("--classes 8 is FER+'s task: it needs --labels ferplus and no --fine-labels")

