"""The import path of ferkit 0.1 (``from ferkit.inference import EmotionPredictor``), kept for one
release: use ``from ferkit import EmotionPredictor`` (the code lives in ``ferkit.infer.predictor``)."""

import warnings

from ferkit.infer.predictor import EmotionPredictor, Face, FacePrediction, crop_face, resize_face

warnings.warn("ferkit.inference is ferkit.infer.predictor since 0.2; import EmotionPredictor from ferkit",
              DeprecationWarning, stacklevel=2)

__all__ = ["EmotionPredictor", "Face", "FacePrediction", "crop_face", "resize_face"]
