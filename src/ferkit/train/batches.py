"""What a training step eats: a split's tensors on the device, the targets (FER2013 labels or a mix
with FER+'s votes), each epoch's order and its augmented batches; and the classic per-sample
``Dataset`` + ``DataLoader`` pipeline beside them (``--pipeline dataloader``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ferkit.data import (
    EMOTIONS_8,
    SPLIT_ALIASES,
    Fer2013Arrays,
    class_names,
    load_fer2013,
    load_ferplus_votes,
    map_labels,
    merge_columns,
    split_labels,
)
from ferkit.train.augment import augment_batch, augment_sample, photometric_batch, random_erasing
from ferkit.train.config import TrainConfig
from ferkit.train.distill import teacher_probabilities


def split_tensors(arrays: Fer2013Arrays, split: str, num_classes: int, device: torch.device,
                  labels: str = "fer2013") -> tuple[torch.Tensor, torch.Tensor]:
    """One split as a uint8 (N, 1, 48, 48) image tensor and int64 labels, on ``device``: FER2013's
    own labels, or FER+'s majority (rows without one left out; see :func:`ferkit.data.split_labels`)."""
    pixels, _ = arrays.split(split)
    y = split_labels(arrays, split, num_classes, labels)
    kept = y >= 0
    images = torch.from_numpy(np.ascontiguousarray(pixels[kept])).unsqueeze(1).to(device)
    return images, torch.from_numpy(y[kept]).to(device)


def vote_shares(arrays: Fer2013Arrays, k: int) -> np.ndarray:
    """Each Training image's FER+ vote shares over the ``k`` labels fitted (FER2013's 7 merged into
    4, the 7, or FER+'s 8), and whether it has any (N, k), (N,)."""
    if k == 8:
        votes = load_ferplus_votes(arrays, columns=EMOTIONS_8)[arrays.rows("Training")]
    else:  # FER2013's 7 labels -> the k fitted
        votes = merge_columns(load_ferplus_votes(arrays)[arrays.rows("Training")], k)
    total = votes.sum(1, keepdims=True)
    return votes / np.maximum(total, 1), total[:, 0] > 0


def training_targets(arrays: Fer2013Arrays, labels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """What training fits for each Training image: ``labels`` (FER2013's, as class indices), or soft
    targets: FER+'s vote shares (``--labels ferplus``; FER2013's label where FER+ has no votes), or
    FER2013's label smoothed toward them (``--smoothing-prior ferplus``: (1 - e) * one-hot + e *
    shares, uniform where FER+ has no votes); with ``--teacher``, (1 - w) * that + w * the teacher's
    probabilities, averaged over the teachers (``ferkit.train.distill``)."""
    if not cfg.soft_targets:
        return labels
    k = cfg.label_classes
    targets = F.one_hot(labels, k).float()
    if cfg.labels == "ferplus" or cfg.smoothing_prior == "ferplus":
        shares, voted = vote_shares(arrays, k)
        if cfg.labels == "ferplus":
            targets = torch.where(torch.from_numpy(voted)[:, None].to(labels.device),
                                  torch.from_numpy(shares).to(labels.device), targets)
        else:
            prior = torch.from_numpy(np.where(voted[:, None], shares, 1 / k).astype(np.float32)).to(labels.device)
            targets = (1 - cfg.label_smoothing) * targets + cfg.label_smoothing * prior
    if cfg.teacher:
        teacher = torch.from_numpy(teacher_probabilities(cfg.teacher, arrays, k, cfg.teacher_temperature,
                                                         cfg.teacher_prior or None, cfg.classes))
        teacher = teacher.float().to(labels.device)
        targets = (1 - cfg.teacher_weight) * targets + cfg.teacher_weight * teacher
    return targets


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class indices of a batch of labels or of soft targets (their largest entry)."""
    return targets.argmax(1) if targets.ndim == 2 else targets


def epoch_order(labels: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """This epoch's sample order (on the CPU): a permutation, or class-balanced draws."""
    if cfg.sampler == "balanced":
        labels = hard_labels(labels)
        counts = torch.bincount(labels.cpu(), minlength=cfg.label_classes).float()
        weights = (1 / counts.clamp(min=1))[labels.cpu()]
        return torch.multinomial(weights, len(labels), replacement=True, generator=generator)
    return torch.randperm(len(labels), generator=generator)


def tensor_batches(
    images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, shuffle: torch.Generator,
    aug: torch.Generator, rank: int = 0, world: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented float batches, made on the images' device; under torchrun each
    process takes its share of every global batch."""
    order = epoch_order(labels, cfg, shuffle).to(images.device)
    batch = cfg.batch_size
    stop = len(order) if world == 1 else len(order) - len(order) % batch  # equal shares for all ranks
    for start in range(0, stop, batch):
        idx = order[start : start + batch][rank :: world]
        if len(idx) < 2:  # batch norm needs two samples
            continue
        x = augment_batch(images[idx].float().div_(255), aug, cfg.flip, cfg.rotation, cfg.min_crop, cfg.shift)
        if cfg.photometric > 0:
            x = photometric_batch(x, cfg.photometric, aug)
        if cfg.erasing > 0:
            x = random_erasing(x, cfg.erasing, aug)
        yield x, labels[idx]


class Fer2013Dataset(Dataset):
    """One FER2013 split as a per-sample ``Dataset`` of ``(image, label)``.

    ``image`` is a float tensor (1, 48, 48) in [0, 1]; ``transform``, if given, takes and returns
    such a tensor (e.g. :func:`ferkit.train.augment.augment_sample`).
    """

    def __init__(
        self,
        source: str | os.PathLike | Fer2013Arrays,
        split: str = "Training",
        num_classes: int = 4,
        transform=None,
        skip_bad_rows: bool = False,
    ) -> None:
        arrays = source if isinstance(source, Fer2013Arrays) else load_fer2013(source, skip_bad_rows)
        pixels, emotion = arrays.split(split)
        self.pixels = torch.from_numpy(np.ascontiguousarray(pixels))
        self.labels = torch.from_numpy(map_labels(emotion, num_classes))
        self.classes = class_names(num_classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.pixels[i].unsqueeze(0).float().div_(255)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])


def create_dataloaders(
    source: str | os.PathLike | Fer2013Arrays,
    batch_size: int = 64,
    num_classes: int = 4,
    workers: int = 0,
    seed: int = 0,
    transform="seed",
    skip_bad_rows: bool = False,
) -> dict[str, DataLoader]:
    """``train``/``val``/``test`` loaders over Training/PublicTest/PrivateTest.

    ``transform`` augments each training image: ``"seed"`` (the seed recipe's flip, rotation and
    crop), ``None``, or any callable on a (1, 48, 48) float tensor.
    """
    if transform == "seed":
        transform = augment_sample
    arrays = source if isinstance(source, Fer2013Arrays) else load_fer2013(source, skip_bad_rows)
    loaders = {}
    for name, usage in SPLIT_ALIASES.items():
        train = name == "train"
        ds = Fer2013Dataset(arrays, usage, num_classes, transform=transform if train else None)
        loaders[name] = DataLoader(
            ds, batch_size=batch_size, shuffle=train, num_workers=workers, drop_last=False,
            generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
        )
    return loaders
