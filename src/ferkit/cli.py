"""The ``ferkit`` command: one subcommand per stage, each a thin call into the package.

    ferkit train     [--recipe seed] --data fer2013.csv.gz --out models/
    ferkit evaluate  --checkpoint models/fer_resnet18_best.pth --data fer2013.csv.gz [--split PrivateTest]
    ferkit image     [PATH ...] [--out annotated.jpg]
    ferkit predict   PATH... [--output faces.csv|faces.jsonl] [--annotate DIR]     # images and folders
    ferkit video     IN [--out annotated.mp4] [--csv timeline.csv] [--plot timeline.png]
    ferkit webcam    [--camera 0]                                                  # q quits, s saves a screenshot
    ferkit serve     [--host 127.0.0.1] [--port 8000] [--model PATH]               # web service and live page
    ferkit export    CHECKPOINT [--weights OUT.pt] [--onnx OUT.onnx [--int8 --calibration-data CSV]] [--torchscript OUT]
"""

from __future__ import annotations

import argparse
import sys

from ferkit.checkpoint import CheckpointError
from ferkit.data import DataError


def evaluate_main(argv: list[str] | None = None) -> int:
    from ferkit.evaluation import TTA_MODES, evaluate_checkpoint, format_report
    from ferkit.model import PRECISIONS

    parser = argparse.ArgumentParser(prog="ferkit evaluate", description="Score a checkpoint on FER2013.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="fer2013.csv, fer2013.csv.gz or .npz")
    parser.add_argument("--split", default="PrivateTest", help="PrivateTest (default), PublicTest or Training")
    parser.add_argument("--out", help="folder for confusion_matrix.png, classification_report.txt, metrics.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-bad-rows", action="store_true")
    parser.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation (default: the checkpoint's)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32 scores as EmotionPredictor runs (default: the checkpoint's)")
    args = parser.parse_args(argv)
    record = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.out, args.device,
                                 skip_bad_rows=args.skip_bad_rows, tta=args.tta, precision=args.precision)
    print(format_report(record, f"{args.checkpoint} on {record['split']}"))
    if args.out:
        print(f"reports written to {args.out}")
    return 0


def export_main(argv: list[str] | None = None) -> int:
    from ferkit.backends import export_onnx, export_torchscript
    from ferkit.checkpoint import export_weights

    parser = argparse.ArgumentParser(prog="ferkit export", description="Export a checkpoint for inference.")
    parser.add_argument("checkpoint")
    parser.add_argument("--weights", help="output: fp16 weights and metadata, no optimizer state (.pt)")
    parser.add_argument("--onnx", help="output: ONNX model with a dynamic batch dimension (.onnx)")
    parser.add_argument("--int8", action="store_true", help="quantize the ONNX model to int8")
    parser.add_argument("--calibration-data", help="FER2013 file whose Training images calibrate --int8")
    parser.add_argument("--calibration-size", type=int, default=2048, help="training images to calibrate on")
    parser.add_argument("--torchscript", help="output: frozen TorchScript module (fp32)")
    args = parser.parse_args(argv)
    if not (args.weights or args.onnx or args.torchscript):
        parser.error("say what to write: --weights, --onnx and/or --torchscript")
    if args.int8 != bool(args.calibration_data):
        parser.error("--int8 and --calibration-data go together")
    written = []
    if args.weights:
        written.append(export_weights(args.checkpoint, args.weights))
    if args.onnx:
        calibration = _calibration_faces(args.calibration_data, args.calibration_size) if args.int8 else None
        written.append(export_onnx(args.checkpoint, args.onnx, calibration))
    if args.torchscript:
        written.append(export_torchscript(args.checkpoint, args.torchscript))
    for out in written:
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _calibration_faces(data: str, count: int):
    """``count`` Training faces drawn with a fixed seed (the same file gives the same int8 model)."""
    import numpy as np

    from ferkit.data import load_fer2013

    pixels, _ = load_fer2013(data).split("Training")
    pick = np.random.default_rng(0).permutation(len(pixels))[:count]
    return pixels[np.sort(pick)]


def serve_main(argv: list[str] | None = None) -> int:
    try:  # the service's dependencies are an extra: the other commands work without them
        from ferkit.serving import serve_main as main
    except ImportError as e:
        raise ImportError(f"ferkit serve needs the serve extra ({e}): pip install 'ferkit[serve]'") from None
    return main(argv)


def _commands():
    from ferkit.batch import predict_main
    from ferkit.demos import image_main, webcam_main
    from ferkit.train import main as train_main
    from ferkit.video import video_main

    return {"train": train_main, "evaluate": evaluate_main, "image": image_main, "predict": predict_main,
            "video": video_main, "webcam": webcam_main, "serve": serve_main, "export": export_main}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ferkit`` console script; bad input ends with a one-line error, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        return commands[argv[0]](argv[1:])
    except (DataError, CheckpointError, FileNotFoundError, ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
