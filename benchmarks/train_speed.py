"""Training speed: the seed recipe on ferkit's engine (data on the device, batched augmentation)
against a plain per-sample ``Dataset`` + ``DataLoader`` pipeline, in the same run.

    python benchmarks/train_speed.py --data ../shared/data/fer2013.csv.gz [--recipe seed] [--steps 60]
    python benchmarks/train_speed.py --data ../shared/data/fer2013.csv.gz --recipe fast --vs contiguous

Both run the same model, optimizer and training step (``ferkit.train.loop.train_one_epoch``) for
``--steps`` steps, alternating ``--repeats`` times; the medians give images/s, seconds per epoch
(28,709 training images) and their ratio. Without ``--data`` it times random images of FER2013's
shape. The engine runs the recipe's options as configured (e.g. ``--compile``; bf16 autocast with
``--precision auto`` where the device has bf16 arithmetic: CUDA GPUs from Ampere on, CPUs with
AVX512-BF16 or AMX; channels_last there and on every CPU); the plain pipeline runs the same model
eagerly, contiguous, in fp32, as a plain PyTorch script would. ``--precision fp32 --layout
contiguous`` times the data path alone. ``--vs contiguous`` times the engine against itself with ``--layout contiguous``
instead: what channels_last gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time
from functools import partial

import numpy as np
import torch
from common import machine

from ferkit.data import USAGES, Fer2013Arrays, load_fer2013
from ferkit.device import channels_last, resolve_device, resolve_precision
from ferkit.train import resolve_config
from ferkit.train.augment import augment_sample
from ferkit.train.batches import create_dataloaders, split_tensors, tensor_batches
from ferkit.train.loop import train_one_epoch
from ferkit.train.parts import build_training

TRAIN_IMAGES = 28_709


def random_arrays(n: int = TRAIN_IMAGES) -> Fer2013Arrays:
    rng = np.random.default_rng(0)
    return Fer2013Arrays(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n),
                         np.zeros(n, dtype=np.int8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="fer2013.csv(.gz); default: random images of the same shape")
    parser.add_argument("--recipe", default="seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain pipeline")
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine's model")
    parser.add_argument("--precision", help="the engine's precision (default: the recipe's): auto, bf16, fp32")
    parser.add_argument("--layout", help="the engine's layout (default: auto): auto, channels_last, contiguous")
    parser.add_argument("--vs", choices=("plain", "contiguous"), default="plain",
                        help="the peer: the plain pipeline, or the engine with --layout contiguous")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    cfg = resolve_config(args.recipe, device=str(device), compile=args.compile, workers=args.workers,
                         precision=args.precision, layout=args.layout)
    arrays = load_fer2013(args.data) if args.data else random_arrays()
    arrays = Fer2013Arrays(arrays.pixels, arrays.emotion, np.zeros(len(arrays.emotion), np.int8))  # all Training
    images, labels = split_tensors(arrays, USAGES[0], cfg.label_classes, device)

    def run(pipeline: str):
        # the plain pipeline runs the same model, optimizer, schedule and loss, eagerly, contiguous, in fp32
        run_cfg = {"engine": cfg, "contiguous": dataclasses.replace(cfg, layout="contiguous"),
                   "plain": resolve_config(args.recipe, device=str(device), precision="fp32",
                                           layout="contiguous")}[pipeline]
        run_cfg = dataclasses.replace(run_cfg, ema=0.0)  # timed without the EMA update, as the figures in reports/ were
        torch.manual_seed(cfg.seed)
        parts = build_training(run_cfg, device, labels, 1000)
        train_model = torch.compile(parts.model) if pipeline == "engine" and cfg.compile else parts.model
        if pipeline != "plain":
            shuffle, aug = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(1)
            source = lambda: tensor_batches(images, labels, cfg, shuffle, aug)  # noqa: E731
        else:
            transform = partial(augment_sample, flip=cfg.flip, rotation=cfg.rotation, min_crop=cfg.min_crop)
            loader = create_dataloaders(arrays, cfg.batch_size, cfg.label_classes, args.workers, cfg.seed,
                                        transform)["train"]
            source = lambda: iter(loader)  # noqa: E731

        def timed(steps: int) -> float:
            batches = itertools.islice(source(), steps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            mix_rng, aug = np.random.default_rng(0), torch.Generator(device=device)  # mixup and cutmix draw from these
            train_one_epoch(parts, batches, steps, run_cfg, mix_rng, aug, device, model=train_model)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return steps * cfg.batch_size / (time.perf_counter() - start)

        timed(5)  # warm-up (and compilation)
        return timed

    runners = {"engine": run("engine"), args.vs: run(args.vs)}
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.repeats):
        for name, timed in runners.items():
            rates[name].append(timed(args.steps))
    median = {k: statistics.median(v) for k, v in rates.items()}
    name = machine(device)
    precision = resolve_precision(cfg.precision, device)
    print(f"{args.recipe} recipe, engine precision {precision}, batch {cfg.batch_size}, "
          f"{args.steps} steps x {args.repeats}, on {device}: {name}, "
          f"{torch.get_num_threads()} threads")
    layout = "channels_last" if channels_last(cfg.layout, cfg.precision, device) else "contiguous"
    labels_of = {"engine": f"ferkit engine (on-device batched augmentation, {layout})",
                 "contiguous": "the same engine, --layout contiguous",
                 "plain": f"per-sample Dataset + DataLoader ({args.workers} workers)"}
    for k in runners:
        label = labels_of[k]
        print(f"  {label:<64} {median[k]:8.1f} images/s  {TRAIN_IMAGES / median[k]:7.1f} s/epoch  "
              f"(runs: {', '.join(f'{r:.0f}' for r in rates[k])})")
    print(f"  speed-up: {median['engine'] / median[args.vs]:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"recipe": args.recipe, "precision": precision, "layout": layout, "vs": args.vs,
                       "device": str(device), "device_name": name, "rates": rates, "median": median,
                       "speedup": median["engine"] / median[args.vs]}, f, indent=2)


if __name__ == "__main__":
    main()
