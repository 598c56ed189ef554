"""Names and defaults that the command line and the library share, importable without torch,
ONNX Runtime or OpenCV (so that ``ferkit --help`` answers at once)."""

from __future__ import annotations

DETECTORS = ("haar", "yunet")
# What every entry point uses unless told otherwise: YuNet found all 43 labelled faces of shared/photos,
# Haar 36 (benchmarks/detector_recall.py, reports/inference/detector_recall.json).
DEFAULT_DETECTOR = "yunet"
BACKENDS = ("auto", "torch", "onnx")  # auto: ONNX Runtime on the CPU when installed, else PyTorch
PRECISIONS = ("auto", "bf16", "fp32")
LAYOUTS = ("auto", "channels_last", "contiguous")
STEMS = ("imagenet", "cifar")
LABEL_SETS = ("fer2013", "ferplus")
OUTPUT_FORMATS = ("csv", "jsonl")  # what ferkit predict writes: a row per face, or a JSON object per face
UNCERTAIN = "uncertain"  # the label of a face below EmotionPredictor's min_confidence
MIN_CONFIDENCE = 0.0  # EmotionPredictor's, every command's and the service's: no face is ever labelled uncertain
# Faces with landmarks (YuNet's) rotated upright and framed by eyes and mouth like FER2013's (ferkit.infer.align), in
# every entry point. Against box crops, for the fast model (benchmarks/align.py, reports/inference/align): balanced
# accuracy on muxspace-dev 62.7% (61.8%), on ckplus-dev 82.4% (80.0%), FER2013 PublicTest enlarged 70.2% (69.8%); a
# face of shared/photos keeps its class when the photo turns 15 degrees 89% of the time (87%).
ALIGN = True
# How videos, webcams and live sessions schedule the detector: every 3rd frame, on a copy shrunk to half, with faces
# followed in between, kept 99-100% of the faces that full-size detection on every frame finds, at three to six times
# its frame rate (benchmarks/inference_speed.py); each face's probabilities are an EMA over 5 frames.
DETECT_EVERY, DETECT_SCALE, SMOOTHING = 3, 0.5, 5
# Image files OpenCV does not read: a folder walk reports them as skipped rather than passing over them silently.
UNSUPPORTED_IMAGE_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".svg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm")  # what folders are searched for

# Test-time view sets, one entry per crop size: how many pixels the crop's side is shorter than the
# image's. 0 is the whole image (one view); any other its four corners and centre, resized back to full
# size; every view also comes mirrored. The cpu recipe trains on crops of 85-100% of the area (44-48 px
# of 48), so all of these look like its training views; reports/cpu-tta compares them.
TTA_TRIMS: dict[str, tuple[int, ...]] = {
    "none": (),
    "flip": (0,),  # the image and its mirror
    "tencrop": (4,),  # five 44-px crops of a 48-px image, and their mirrors
    "tencrop_full": (0, 4),  # tencrop plus the image and its mirror (12 views)
    "multiscale": (0, 2, 4),  # the image, five 46-px and five 44-px crops, and their mirrors (22 views)
}
TTA_MODES = tuple(TTA_TRIMS)
# What EmotionPredictor, every model command and the service use: each face and its mirror, in one batch.
# On PublicTest and muxspace-dev it raised every measure of the fast model (FER2013 accuracy +1.1 points,
# FER+ +1.3, balanced in the wild +0.8) for a cost within the noise of a still photo's 27-30 ms (reports/wild).
DEFAULT_TTA = "flip"
