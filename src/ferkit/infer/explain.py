"""Why the model said what it said: a heat map per face of what drove its predicted class.

    from ferkit import EmotionPredictor
    predictor = EmotionPredictor()
    for e in predictor.explain("photo.jpg"):               # one Explanation per face
        print(e.face.emotion, e.method, e.heatmap.shape)   # (48, 48) in [0, 1] over the face's crop
    cv2.imwrite("why.png", draw_explanations(image, explanations))

Two methods:

- ``gradcam`` (Selvaraju et al. 2017): the gradient of the class score weights the feature maps of
  the deepest residual stage that still has at least 6x6 cells (``layer2`` for the bundled models'
  ImageNet stem, whose ``layer4`` is 2x2 on a 48x48 face); needs the PyTorch weights.
- ``occlusion`` (Zeiler and Fergus 2014): how much the class probability falls when a gray patch
  covers each part of the face; it only calls the network, so it works with the ONNX backend too.

Maps are normalised to [0, 1] per face (1: what mattered most).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ferkit.data import IMAGE_SIZE
from ferkit.infer.detection import Box

METHODS = ("auto", "gradcam", "occlusion")
MIN_CAM_CELLS = 6  # Grad-CAM's stage: the deepest whose maps are at least this many cells a side
OCCLUSION_PATCH, OCCLUSION_STRIDE = 12, 4  # a quarter of the face a side, moved 4 pixels at a time


@dataclass(frozen=True)
class Explanation:
    """One face's explanation: the face (its prediction), the heat map (48x48, in [0, 1]) over the
    48x48 face the network saw, ``transform`` (2x3: frame pixels to that face's pixels, a box crop's
    scale and shift or an alignment's rotation too) and the method that made it."""

    face: object  # ferkit.infer.predictor.Face
    heatmap: np.ndarray
    transform: np.ndarray
    method: str

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """The frame position of the point (x, y) of the 48x48 face."""
        inverse = cv2.invertAffineTransform(self.transform)
        fx, fy = inverse @ np.array([x, y, 1.0])
        return float(fx), float(fy)

    @property
    def crop(self) -> Box:
        """The square of the frame (x, y, side, side) that holds the face the network saw."""
        corners = np.array([self.to_frame(x, y) for x in (0, IMAGE_SIZE) for y in (0, IMAGE_SIZE)])
        (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
        side = int(round(max(x1 - x0, y1 - y0)))
        return int(round(x0)), int(round(y0)), side, side


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map shifted and scaled to [0, 1] (all zeros where a map is flat)."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def gradcam(model: torch.nn.Module, batch: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM maps (N, 48, 48) of ``classes`` (one per face) for a float batch (N, 1, 48, 48)."""
    model.eval()
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    features: list[torch.Tensor] = []
    hooks = [s.register_forward_hook(lambda _m, _i, out: features.append(out)) for s in stages]
    try:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(next(model.parameters()).device)
        with torch.enable_grad():
            scores = model(x)
            deep = [f for f in features if min(f.shape[-2:]) >= MIN_CAM_CELLS][-1]
            picked = scores[torch.arange(len(x)), torch.as_tensor(classes, device=scores.device)].sum()
            (grads,) = torch.autograd.grad(picked, deep)
    finally:
        for h in hooks:
            h.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # each channel's importance for the class
    cam = torch.relu((weights * deep).sum(1, keepdim=True)).detach().float().cpu()
    cam = torch.nn.functional.interpolate(cam, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return _normalise(cam[:, 0].numpy())


def occlusion(classify, batch: np.ndarray, classes: np.ndarray, patch: int = OCCLUSION_PATCH,
              stride: int = OCCLUSION_STRIDE) -> np.ndarray:
    """Occlusion maps (N, 48, 48): for each pixel, the mean drop of the class probability over the
    gray patches covering it. ``classify``: float batch (M, 1, 48, 48) -> probabilities (M, classes)."""
    starts = range(0, IMAGE_SIZE - patch + 1, stride)
    spots = [(y, x) for y in starts for x in starts]
    maps = np.zeros((len(batch), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for n, (face, k) in enumerate(zip(batch, classes, strict=True)):
        base = classify(face[None])[0, k]
        covered = np.repeat(face[None], len(spots), axis=0)
        for i, (y, x) in enumerate(spots):
            covered[i, :, y : y + patch, x : x + patch] = 0.5
        drop = base - classify(covered)[:, k]
        total, count = np.zeros((IMAGE_SIZE, IMAGE_SIZE)), np.zeros((IMAGE_SIZE, IMAGE_SIZE))
        for d, (y, x) in zip(drop, spots, strict=True):
            total[y : y + patch, x : x + patch] += d
            count[y : y + patch, x : x + patch] += 1
        maps[n] = total / np.maximum(count, 1)
    return _normalise(np.maximum(maps, 0))


def draw_explanations(image: np.ndarray, explanations: list[Explanation], alpha: float = 0.5) -> np.ndarray:
    """A BGR copy of ``image`` with each heat map blended over its face's crop (red: what mattered
    most) and the predicted emotion written above it."""
    from ferkit.infer.detection import to_bgr

    out = to_bgr(image).copy()
    height, width = out.shape[:2]
    for e in explanations:
        # the map carried back through the face's transform: over the frame pixels the network saw
        heat = cv2.warpAffine(e.heatmap, e.transform, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        inside = cv2.warpAffine(np.ones_like(e.heatmap), e.transform, (width, height),
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
        if not inside.any():
            continue
        colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
        out[inside] = cv2.addWeighted(out, 1 - alpha, colored, alpha, 0)[inside]
        outline = np.array([e.to_frame(x, y) for x, y in ((0, 0), (IMAGE_SIZE, 0), (IMAGE_SIZE, IMAGE_SIZE),
                                                          (0, IMAGE_SIZE))]).round().astype(np.int32)
        cv2.polylines(out, [outline], True, (255, 255, 255), 1)
        x0, y0 = outline.min(0)
        label = f"{e.face.emotion} {e.face.confidence:.0%} ({e.method})"
        cv2.putText(out, label, (max(0, int(x0)), max(12, int(y0) - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
