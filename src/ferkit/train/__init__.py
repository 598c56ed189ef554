"""Training: ``config`` (TrainConfig, recipes), ``batches`` (targets, order, batches), ``augment``,
``parts`` (optimizer, schedule, loss, EMA) and ``loop`` (``train_one_epoch``, ``train``).

The names below load on first use, so that reading a recipe (``ferkit train --help``) needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {"RECIPES": "config", "TrainConfig": "config", "check_config": "config", "resolve_config": "config",
         "BEST_CHECKPOINT": "loop", "LAST_CHECKPOINT": "loop", "train": "loop", "train_one_epoch": "loop"}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'ferkit.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ferkit.train.{_HOME[name]}"), name)
