"""The ``ferkit`` command, and the only argument parser in the package: one subcommand per stage,
each a thin call into the library, which never parses flags.

    ferkit train     [--recipe seed] --data fer2013.csv.gz --out models/
    ferkit evaluate  [--model NAME|PATH] --data fer2013.csv.gz [--split PrivateTest] [--labels ferplus]
    ferkit evaluate  [--model NAME|PATH] --folder faces/ [--cropped]               # labelled face folders
    ferkit image     [PATH ...] [--out annotated.jpg]
    ferkit explain   [PATH ...] [--out why.jpg] [--method auto|gradcam|occlusion]    # what drove each emotion
    ferkit predict   PATH... [--output faces.csv|faces.jsonl] [--annotate DIR]     # images and folders
    ferkit video     IN [--out annotated.mp4] [--csv timeline.csv] [--plot timeline.png]
    ferkit webcam    [--camera 0]                                                  # q quits, s saves a screenshot
    ferkit serve     [--host 127.0.0.1] [--port 8000] [--model PATH]               # web service and live page
    ferkit export    [--model NAME|PATH] [--weights OUT.pt] [--onnx OUT.onnx [--int8 --calibration-data CSV]]
    ferkit calibrate MODEL --data fer2013.csv.gz [--out CALIBRATED]                # temperature scaling
                     [--logit-adjustment TAU]                                 # rare labels called more
    ferkit teach     MODEL --data fer2013.csv.gz --out reports/teachers/NAME       # then train --teacher

Parsing imports neither torch nor OpenCV: ``ferkit --help`` answers at once; each command imports
what it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from collections.abc import Callable

from ferkit import __version__, defaults
from ferkit.serve.config import ServiceConfig
from ferkit.train.config import RECIPES, TrainConfig, resolve_config

SERVICE = ServiceConfig()  # the service's defaults

# ----------------------------------------------------------------------------------------------
# Shared option groups


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="a bundled model's name (fast, the default; fast7: seven classes) or a "
                       "checkpoint, weights file or ONNX export")
    group.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda... (default: auto)")
    group.add_argument("--backend", choices=defaults.BACKENDS, default="auto",
                       help="auto: ONNX Runtime on the CPU when installed, else PyTorch (default: auto)")
    group.add_argument("--min-confidence", type=float, default=defaults.MIN_CONFIDENCE,
                       help=f"label faces less sure than this 'uncertain' (default: {defaults.MIN_CONFIDENCE:g}: "
                       "never)")
    group.add_argument("--tta", choices=defaults.TTA_MODES, default=defaults.DEFAULT_TTA,
                       help="test-time views per face, averaged: flip adds its mirror, none is one view, tencrop_full "
                       "twelve (about a point more accurate, for photos rather than video; default: "
                       f"{defaults.DEFAULT_TTA})")


def add_detector_options(parser: argparse.ArgumentParser, video: bool) -> None:
    group = parser.add_argument_group("faces")
    group.add_argument("--detector", choices=defaults.DETECTORS, default=defaults.DEFAULT_DETECTOR,
                       help=f"face detector (default: {defaults.DEFAULT_DETECTOR})")
    add_align_option(group)
    if video:
        group.add_argument("--detect-every", type=int, default=defaults.DETECT_EVERY, help="run the detector every N "
                           f"frames and follow faces in between (default: {defaults.DETECT_EVERY})")
        group.add_argument("--detect-scale", type=float, default=defaults.DETECT_SCALE,
                           help=f"shrink frames by this factor for detection (default: {defaults.DETECT_SCALE})")
        group.add_argument("--smoothing", type=float, default=defaults.SMOOTHING,
                           help="EMA window in frames for each face's probabilities (1: none; default: "
                           f"{defaults.SMOOTHING})")


def add_align_option(group) -> None:
    group.add_argument("--no-align", dest="align", action="store_false",
                       help="crop faces by their boxes alone (default: rotate each face upright and frame it by its "
                       "eyes and mouth like FER2013's, where the detector gives landmarks)")


def make_pipeline(args: argparse.Namespace):
    """The pipeline the model and face options describe."""
    from ferkit.infer.pipeline import FacePipeline
    from ferkit.infer.predictor import EmotionPredictor

    predictor = EmotionPredictor(args.model, device=args.device, backend=args.backend,
                                 min_confidence=args.min_confidence, tta=args.tta, align=args.align)
    if not hasattr(args, "detect_every"):
        return FacePipeline(predictor, args.detector)
    return FacePipeline(predictor, args.detector, args.detect_every, args.detect_scale, args.smoothing)


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


# ----------------------------------------------------------------------------------------------
# The commands: each builds its parser, and runs from the parsed arguments


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


def image_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="image files or folders (default: the bundled example photos)")
    p.add_argument("--out", help="annotated output: a file for one image, else a folder "
                                 "(default: <name>_annotated.jpg in the folder 'annotated/')")
    add_model_options(p)
    add_detector_options(p, video=False)


def image_run(args: argparse.Namespace) -> int:
    from ferkit.apps.predict import show_images

    return show_images(args.paths, make_pipeline(args), args.out)


def explain_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="image files or folders (default: the bundled example photos)")
    p.add_argument("--method", choices=("auto", "gradcam", "occlusion"), default="auto",
                   help="gradcam (PyTorch weights), occlusion (any model, ONNX too) or auto: Grad-CAM where the "
                        "weights are at hand (default: auto)")
    p.add_argument("--out", help="output: a file for one image, else a folder "
                                 "(default: <name>_explained.jpg in the folder 'explained/')")
    add_model_options(p)
    add_detector_options(p, video=False)


def explain_run(args: argparse.Namespace) -> int:
    from ferkit.apps.predict import show_images

    return show_images(args.paths, make_pipeline(args), args.out, explain=args.method)


def predict_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("--output", "-o", help="file to write (default: standard output)")
    p.add_argument("--format", choices=defaults.OUTPUT_FORMATS,
                   help="csv or jsonl (default: from --output's suffix, else csv)")
    p.add_argument("--annotate", metavar="DIR", help="also write annotated copies into DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    add_detector_options(p, video=False)


def predict_run(args: argparse.Namespace) -> int:
    from ferkit.apps.predict import predict_paths

    progress = not args.quiet and sys.stderr.isatty()
    return predict_paths(args.paths, make_pipeline(args), args.output, args.format, args.annotate, progress)


def video_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="input video file")
    p.add_argument("--out", help="annotated video to write (.mp4 or .avi)")
    p.add_argument("--csv", help="timeline CSV: frame, time, track, box, emotion, probabilities")
    p.add_argument("--plot", help="timeline plot (.png): each track's probabilities over time")
    p.add_argument("--summary", help="per-track summary (.json): when seen, duration, dominant emotion, share of "
                                     "time in each emotion")
    p.add_argument("--codec", choices=("h264", "mp4v", "mjpg"),
                   help="video codec of --out (default: h264 with the input's sound for .mp4/.mov/.mkv, mjpg for .avi)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    add_detector_options(p, video=True)


def video_run(args: argparse.Namespace) -> int:
    from ferkit.apps.video import process_video

    if not (args.out or args.csv or args.plot or args.summary):
        raise ValueError("say what to write: --out, --csv, --plot and/or --summary")
    result = process_video(args.video, make_pipeline(args), args.out, args.csv, args.plot, args.max_frames,
                           not args.quiet, args.summary, args.codec)
    print(f"{result.frames} frames in {result.seconds:.1f} s ({result.fps:.1f} FPS), {len(result.timeline)} "
          f"track{'s' if len(result.timeline) != 1 else ''}", file=sys.stderr)
    for what, path in (("annotated video", args.out), ("timeline", args.csv), ("plot", args.plot),
                       ("track summary", args.summary)):
        if path:
            print(f"{what}: {path}", file=sys.stderr)
    if result.interrupted:
        print(f"interrupted after {result.frames} frames; what was written is complete", file=sys.stderr)
        return 130
    if result.expected and not args.max_frames and result.frames < result.expected:
        print(f"warning: read {result.frames} of the {result.expected} frames the file declares: it may be damaged "
              "or cut short", file=sys.stderr)
        return 1
    return 0


def webcam_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera", default="0", help="camera index, or a video file path (default: 0)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: never)")
    p.add_argument("--screenshots", default=".", help="folder for 's' screenshots (default: .)")
    add_model_options(p)
    add_detector_options(p, video=True)


def webcam_run(args: argparse.Namespace) -> int:
    from ferkit.apps.camera import run_camera

    return run_camera(args.camera, make_pipeline(args), args.max_frames, args.screenshots)


def serve_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    add_model_options(p)
    p.add_argument("--detector", choices=defaults.DETECTORS, default=SERVICE.detector,
                   help=f"face detector (default: {SERVICE.detector})")
    add_align_option(p)
    p.add_argument("--max-side", type=int, default=SERVICE.max_side,
                   help="shrink larger images to this longer side for detection; 0: full size, as every "
                        f"entry point (default: {SERVICE.max_side})")
    p.add_argument("--max-upload-mb", type=float, default=SERVICE.max_upload_bytes / 2**20,
                   help=f"largest upload accepted, in MiB (default: {SERVICE.max_upload_bytes / 2**20:g})")
    p.add_argument("--max-batch", type=int, default=SERVICE.max_batch,
                   help=f"most images in one batch request (default: {SERVICE.max_batch})")
    p.add_argument("--max-pixels", type=int, default=SERVICE.max_pixels,
                   help=f"largest image, in pixels (default: {SERVICE.max_pixels:,})")
    p.add_argument("--allowed-hosts", nargs="+", default=list(SERVICE.allowed_hosts), metavar="NAME",
                   help="host names requests may be addressed to ('*': any; default: loopback names, and --host "
                        "when it names one address)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin (https://app.example) whose pages may call the API; repeatable (default: none)")
    p.add_argument("--max-requests-per-worker", type=int, default=SERVICE.max_requests_per_worker,
                   help="replace a worker process after this many requests, bounding leaked native memory (0: never; "
                        f"default: {SERVICE.max_requests_per_worker})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes analysing images side by side, each with its own model (default: one per core)")


def serve_run(args: argparse.Namespace) -> int:
    try:  # the service's dependencies are an extra: the other commands work without them
        from ferkit.serve.app import serve
    except ImportError as e:
        raise ImportError(f"ferkit serve needs the serve extra ({e}): pip install 'ferkit[serve]'") from None
    config = ServiceConfig(model=args.model, device=args.device, backend=args.backend,
                           min_confidence=args.min_confidence, tta=args.tta, detector=args.detector,
                           align=args.align, allowed_hosts=tuple(args.allowed_hosts),
                           cors_origins=tuple(args.cors_origin),
                           max_requests_per_worker=args.max_requests_per_worker,
                           max_side=args.max_side, max_upload_bytes=int(args.max_upload_mb * 2**20),
                           max_batch=args.max_batch, max_pixels=args.max_pixels)
    serve(config, args.host, args.port, args.workers)
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


# name: (one-line description, parser builder, runner)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a ResNet-18 on FER2013 with a named recipe", add_train_arguments, train_run),
    "evaluate": ("score a model on FER2013 (its or FER+'s labels) or on a labelled face folder", evaluate_parser,
                 evaluate_run),
    "image": ("faces and emotions in images, printed and annotated", image_parser, image_run),
    "explain": ("heat maps of what drove each face's predicted emotion (Grad-CAM or occlusion)", explain_parser,
                explain_run),
    "predict": ("faces and emotions in images and folders, as CSV or JSON lines", predict_parser, predict_run),
    "video": ("faces in a video, tracked and smoothed: annotated video, timeline, plot", video_parser, video_run),
    "webcam": ("live emotions from a camera", webcam_parser, webcam_run),
    "serve": ("the web service and live page", serve_parser, serve_run),
    "export": ("export a model: fp16 weights, ONNX (fp32 or int8), TorchScript", export_parser, export_run),
    "calibrate": ("fit a model's temperature on PublicTest, so that its probabilities mean what they say",
                  calibrate_parser, calibrate_run),
    "teach": ("write a model's logits for every FER2013 image into the teacher bank (ferkit train --teacher)",
              teach_parser, teach_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferkit", description="Facial emotion recognition: train, evaluate and run "
                                     "a from-scratch ResNet-18 on FER2013.", epilog=__doc__.split("\n\n")[1])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (summary, build, run) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        build(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ferkit`` console script; bad input ends with a one-line error, exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        near = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        print(f"ferkit: unknown command '{argv[0]}'{hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except OSError as e:  # files that cannot be read or written (read-only or full disk, a file where a folder is)
        print(f"error: {path_error(e)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, ImportError) as e:  # DataError, CheckpointError: ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2


def path_error(e: OSError) -> str:
    """One shape for every file-system error: the path, what is wrong with it, and what to do."""
    if e.filename is None or not e.strerror:
        return str(e)
    hint = {FileExistsError: "a file stands where a folder is needed", NotADirectoryError: "a file stands where a "
            "folder is needed", PermissionError: "choose a place you can write", FileNotFoundError: "check the path",
            IsADirectoryError: "give a file's path, not a folder's"}.get(type(e), "choose another path")
    return f"{e.filename}: {e.strerror.lower()} ({hint})"


if __name__ == "__main__":
    raise SystemExit(main())
