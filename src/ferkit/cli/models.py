"""The ``ferkit`` commands that make, score and ship models: train, evaluate, export, calibrate and
teach. Each builds its parser and runs from the parsed arguments; the library does the work."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ferkit import defaults
from ferkit.cli.options import add_align_option
from ferkit.train.config import RECIPES, TrainConfig, resolve_config


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, its help from the field; unset flags keep the recipe's value."""
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag, default, meta = "--" + field.name.replace("_", "-"), getattr(defaults, field.name), field.metadata
        recipes = ", ".join(f"{r}: {v[field.name]}" for r, v in RECIPES.items() if field.name in v)
        help = f"{meta['help']} (seed: {default!r}{'; ' + recipes if recipes else ''})"
        if field.name == "recipe":
            parser.add_argument(flag, default="seed", choices=sorted(RECIPES), help=meta["help"] + " (default: seed)")
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=None, help=help)
        else:
            parser.add_argument(flag, type=type(default), default=None, choices=meta["choices"], help=help)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "recipe"}
    return resolve_config(args.recipe, **overrides)


def train_run(args: argparse.Namespace) -> int:
    from ferkit.train.loop import train

    train(config_from_args(args))
    return 0


def evaluate_parser(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="FER2013: fer2013.csv, fer2013.csv.gz or .npz")
    source.add_argument("--folder", help="labelled face images, one subfolder per label (anger, happiness, ...)")
    p.add_argument("--model", "--checkpoint", dest="model",
                   help="a bundled model's name (fast, the default; fast7: seven classes) or a checkpoint or "
                   "ONNX export")
    p.add_argument("--backend", choices=defaults.BACKENDS, default="auto",
                   help="score as EmotionPredictor runs the model with this backend (default: auto)")
    p.add_argument("--as-trained", action="store_true",
                   help="score as the checkpoint was trained to be scored: PyTorch, its test-time views and precision")
    p.add_argument("--split", default="PrivateTest",
                   help="FER2013 split: PrivateTest (default), PublicTest or Training")
    p.add_argument("--labels", choices=defaults.LABEL_SETS, default="fer2013",
                   help="FER2013's labels or FER+'s majority votes (rows without a majority are left out)")
    p.add_argument("--cropped", action="store_true", help="--folder holds face crops: classify them as they are "
                   "(default: detect faces and score each image's largest)")
    p.add_argument("--detector", choices=defaults.DETECTORS, default=defaults.DEFAULT_DETECTOR,
                   help=f"face detector for --folder without --cropped (default: {defaults.DEFAULT_DETECTOR})")
    add_align_option(p)
    p.add_argument("--out", help="folder for confusion_matrix.png, classification_report.txt, metrics.json")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda...")
    p.add_argument("--skip-bad-rows", action="store_true", help="drop malformed CSV rows instead of stopping")
    p.add_argument("--tta", choices=defaults.TTA_MODES,
                   help=f"test-time views (default: {defaults.DEFAULT_TTA}; --as-trained: the checkpoint's)")
    p.add_argument("--precision", choices=defaults.PRECISIONS, help="PyTorch precision; implies --as-trained")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def evaluate_run(args: argparse.Namespace) -> int:
    from ferkit.calibration import format_calibration
    from ferkit.evaluation import evaluate_checkpoint, format_report, write_reports
    from ferkit.infer.models import resolve_model

    model = resolve_model(args.model)
    progress = not args.quiet and sys.stderr.isatty()
    if args.folder:
        from ferkit.folders import evaluate_folder
        from ferkit.infer.predictor import EmotionPredictor

        predictor = EmotionPredictor(model, device=args.device, backend=args.backend,
                                     tta=args.tta or defaults.DEFAULT_TTA, align=args.align)
        record = evaluate_folder(predictor, args.folder, args.cropped, args.detector, progress=progress)
        title = f"{model} on {args.folder} ({'crops' if args.cropped else record['detector']}, {predictor.backend})"
        print(format_report(record, title))
        print(f"skipped folders: {record['skipped_folders'] or 'none'}; unreadable files: {record['unreadable']}"
              + ("" if args.cropped else f"; images without a face: {record['no_face']}"))
    else:
        backend = None if args.as_trained or args.precision else args.backend
        record = evaluate_checkpoint(model, args.data, args.split, None, args.device,
                                     skip_bad_rows=args.skip_bad_rows, tta=args.tta, precision=args.precision,
                                     labels=args.labels, backend=backend, progress=progress)
        dropped = f", {record['dropped']} rows without a FER+ majority left out" if record["dropped"] else ""
        print(format_report(record, f"{model} on {record['split']} ({args.labels} labels{dropped}; "
                                    f"backend {record['backend']}, {record['precision']}, "
                                    f"test-time views: {record['tta']})"))
    print(format_calibration(record["calibration"], record["risk_coverage"]), flush=True)
    if args.out:  # after the figures are printed: a path that cannot be written loses none of them
        try:
            write_reports(record, args.out, args.folder or record["split"])
        except OSError as e:
            raise ValueError(f"--out {args.out}: cannot write the reports there ({e.strerror or e}); the figures "
                             "are above: choose a folder you can write") from None
        print(f"reports written to {args.out}")
    return 0


def export_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="the checkpoint to export (default: --model, else the bundled model)")
    p.add_argument("--model", help="a bundled model's name or a checkpoint to export (default: fast)")
    p.add_argument("--weights", help="output: fp16 weights and metadata, no optimizer state (.pt)")
    p.add_argument("--onnx", help="output: ONNX model with a dynamic batch dimension (.onnx)")
    p.add_argument("--int8", action="store_true", help="quantize the ONNX model to int8")
    p.add_argument("--calibration-data", help="FER2013 file whose Training images calibrate --int8")
    p.add_argument("--calibration-size", type=int, default=2048, help="training images to calibrate on (default: 2048)")
    p.add_argument("--torchscript", help="output: frozen TorchScript module (fp32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def export_run(args: argparse.Namespace) -> int:
    from ferkit.infer.export import calibration_faces, export_onnx, export_torchscript, export_weights
    from ferkit.infer.models import resolve_model

    if not (args.weights or args.onnx or args.torchscript):
        raise ValueError("say what to write: --weights, --onnx and/or --torchscript")
    if args.int8 != bool(args.calibration_data):
        raise ValueError("--int8 and --calibration-data go together")
    checkpoint = resolve_model(args.checkpoint or args.model)
    written = []
    if args.weights:
        written.append(export_weights(checkpoint, args.weights))
    if args.onnx:
        calibration = calibration_faces(args.calibration_data, args.calibration_size) if args.int8 else None
        written.append(export_onnx(checkpoint, args.onnx, calibration,
                                   progress=not args.quiet and sys.stderr.isatty()))
    if args.torchscript:
        written.append(export_torchscript(checkpoint, args.torchscript))
    for out in written:
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def calibrate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a checkpoint, weights file or ONNX export")
    p.add_argument("--data", required=True, help="FER2013 file: the temperature is fitted on its PublicTest")
    p.add_argument("--labels", choices=defaults.LABEL_SETS, default="fer2013",
                   help="fit to FER2013's labels or FER+'s majority votes (default: fer2013)")
    p.add_argument("--out", help="write the calibrated model here (default: into MODEL itself)")
    p.add_argument("--tta", choices=defaults.TTA_MODES, default=defaults.DEFAULT_TTA,
                   help="fit for these test-time views, their probabilities averaged (default: "
                   f"{defaults.DEFAULT_TTA}, what every entry point uses)")
    p.add_argument("--logit-adjustment", type=float, default=0.0, metavar="TAU",
                   help="first take TAU x log(each label's FER2013 Training frequency) off the last layer's bias, "
                   "so that rare labels such as disgust are called more often (PyTorch files, into --out; default: 0)")


def calibrate_run(args: argparse.Namespace) -> int:
    from ferkit.calibration import calibrate_model

    if args.logit_adjustment and not args.out:
        raise ValueError("--logit-adjustment changes the weights: say where the adjusted copy goes (--out)")
    temperature, out = calibrate_model(args.model, args.data, args.out, args.labels, args.tta, args.logit_adjustment)
    adjusted = f"logit adjustment tau {args.logit_adjustment:g}, " if args.logit_adjustment else ""
    print(f"{adjusted}temperature {temperature:g} (fitted on PublicTest, {args.labels} labels, test-time views: "
          f"{args.tta}) written to {out}")
    return 0


def teach_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the teacher: a bundled model's name or a checkpoint or weights file (.pth/.pt)")
    p.add_argument("--data", required=True, help="FER2013 file whose images (all three splits) are scored")
    p.add_argument("--out", required=True, help="the teacher's folder in the bank (reports/teachers/NAME), for "
                   "`ferkit train --teacher`")
    p.add_argument("--views", choices=defaults.TTA_MODES, default="flip",
                   help="test-time views whose logits are kept (default: flip, the image and its mirror: 1 MB, "
                   "6 minutes on 2 cores; tencrop_full: 12 views, 6 MB, 30 minutes)")
    p.add_argument("--folder", nargs="*", default=[], help="labelled face folders of crops (anger/, happiness/, "
                   "...) whose logits and balanced accuracy are kept too")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda... (default: auto)")


def teach_run(args: argparse.Namespace) -> int:
    from ferkit.data import load_fer2013
    from ferkit.device import resolve_device
    from ferkit.infer.models import resolve_model
    from ferkit.train.distill import describe_teacher, write_teacher

    device, model = resolve_device(args.device), resolve_model(args.model)
    if model.suffix == ".onnx":
        raise ValueError(f"{model}: a teacher is a PyTorch checkpoint or weights file: an ONNX export has merged "
                         "its labels")
    out = write_teacher(model, load_fer2013(args.data), args.out, args.views, args.folder, device, progress=True)
    print(describe_teacher(out))
    return 0
