"""The ``ferkit`` commands that run a model on faces: image, explain, predict, video, webcam and
serve. Each builds its parser and runs from the parsed arguments; the library does the work."""

from __future__ import annotations

import argparse
import os
import sys

from ferkit import defaults
from ferkit.cli.options import add_align_option, add_detector_options, add_model_options, make_pipeline
from ferkit.serve.config import ServiceConfig

SERVICE = ServiceConfig()  # the service's defaults


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
