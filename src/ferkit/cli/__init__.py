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
import difflib
import sys
from collections.abc import Callable

from ferkit import __version__
from ferkit.cli import apps, models

# name: (one-line description, parser builder, runner)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a ResNet-18 on FER2013 with a named recipe", models.add_train_arguments, models.train_run),
    "evaluate": ("score a model on FER2013 (its or FER+'s labels) or on a labelled face folder", models.evaluate_parser,
                 models.evaluate_run),
    "image": ("faces and emotions in images, printed and annotated", apps.image_parser, apps.image_run),
    "explain": ("heat maps of what drove each face's predicted emotion (Grad-CAM or occlusion)", apps.explain_parser,
                apps.explain_run),
    "predict": ("faces and emotions in images and folders, as CSV or JSON lines", apps.predict_parser,
                apps.predict_run),
    "video": ("faces in a video, tracked and smoothed: annotated video, timeline, plot", apps.video_parser,
              apps.video_run),
    "webcam": ("live emotions from a camera", apps.webcam_parser, apps.webcam_run),
    "serve": ("the web service and live page", apps.serve_parser, apps.serve_run),
    "export": ("export a model: fp16 weights, ONNX (fp32 or int8), TorchScript", models.export_parser,
               models.export_run),
    "calibrate": ("fit a model's temperature on PublicTest, so that its probabilities mean what they say",
                  models.calibrate_parser, models.calibrate_run),
    "teach": ("write a model's logits for every FER2013 image into the teacher bank (ferkit train --teacher)",
              models.teach_parser, models.teach_run),
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
