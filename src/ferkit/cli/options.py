"""Option groups that several ``ferkit`` commands share (the model, the face detector), and the
pipeline they describe."""

from __future__ import annotations

import argparse

from ferkit import defaults


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
