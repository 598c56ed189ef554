"""ResNet-18 for 48x48 grayscale faces, from random initialization.

Parameter names follow torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer2.0.downsample.0``, ``fc``) so a state dict loads into ``torchvision.models.resnet18(
num_classes=N)`` once its ``conv1`` takes one channel. The ``imagenet`` stem (7x7 stride-2 conv and
max-pool) is the seed recipe's; the ``cifar`` stem (3x3 stride-1 conv, no pool) keeps more
resolution for 48x48 inputs.

A model trained on finer labels than it reports (``fine_to_class``: FER2013's seven emotions for
the 4-class task) has one ``fc`` output per fine label and returns, for each class, the log-sum-exp
of its fine labels' logits: their softmax is exactly the summed fine-label probabilities.

A model made with ``equalize`` spreads each input's gray levels by global histogram equalization
(:func:`equalize_histogram`, as FER+'s reference preprocessing does) before its first layer: the
step is part of the network, so training, evaluation, distillation and both inference backends
(the ONNX export included) apply the same one. It has no parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ferkit.defaults import STEMS


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def equalize_histogram(x: torch.Tensor) -> torch.Tensor:
    """Global histogram equalization of each image of a batch (N, C, H, W) in [0, 1], by 256 gray
    levels, as ``cv2.equalizeHist``: each level goes to the share of the image's other pixels that are
    darker, stretched so that the darkest present level is 0 and the lightest 1. A flat image
    stays as it is."""
    n, c, h, w = x.shape
    levels = (x.float() * 255).round().clamp(0, 255).long().reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float))
    cdf = hist.cumsum(1)
    lowest = cdf.gather(1, levels.min(1, keepdim=True).values)  # the pixels at the darkest present level
    span = h * w - lowest
    out = (cdf.gather(1, levels) - lowest) / span.clamp(min=1)
    out = torch.where(span > 0, out, x.float().reshape(n * c, h * w))
    return out.reshape(n, c, h, w).to(x.dtype)


class FerResNet18(nn.Module):
    """ResNet-18 (2-2-2-2 basic blocks) taking (B, in_channels, 48, 48) and returning class scores
    (B, num_classes): logits, or merged fine-label scores when ``fine_to_class`` is given; with
    ``equalize``, each input is histogram-equalized first."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, stem: str = "imagenet",
                 fine_to_class: Sequence[int] | None = None, zero_init_residual: bool = False,
                 equalize: bool = False) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if fine_to_class is not None and sorted(set(fine_to_class)) != list(range(num_classes)):
            raise ValueError(f"fine_to_class must map fine labels onto every class 0-{num_classes - 1}, "
                             f"got {list(fine_to_class)}")
        self.num_classes, self.in_channels, self.stem, self.equalize = num_classes, in_channels, stem, bool(equalize)
        self.fine_to_class = None if fine_to_class is None else [int(c) for c in fine_to_class]
        self._groups = [[f for f, c in enumerate(self.fine_to_class or ()) if c == k] for k in range(num_classes)]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(64, 64, 1)
        self.layer2 = self._make_layer(64, 128, 2)
        self.layer3 = self._make_layer(128, 256, 2)
        self.layer4 = self._make_layer(256, 512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes if fine_to_class is None else len(fine_to_class))
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_layer(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's initialization: He-normal convs, unit BN scale, zero BN shift; optionally each
        # block's last BN scale at zero, so every block starts as the identity (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor, merge: bool = True) -> torch.Tensor:
        """Class scores; ``merge=False`` returns the ``fc`` logits as they are (the fine labels' logits
        of a model with ``fine_to_class``, which is what training fits)."""
        if self.equalize:
            x = equalize_histogram(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        logits = self.fc(torch.flatten(self.avgpool(x), 1))
        if self.fine_to_class is None or not merge:
            return logits
        logits = logits.float()  # sums of probabilities: not in bf16
        return torch.stack([torch.logsumexp(logits[:, g], dim=1) for g in self._groups], dim=1)


def create_model(num_classes: int = 4, stem: str = "imagenet", in_channels: int = 1,
                 fine_to_class: Sequence[int] | None = None, zero_init_residual: bool = False,
                 equalize: bool = False) -> FerResNet18:
    """A randomly initialized ResNet-18 for FER (never pretrained); ``zero_init_residual`` starts each
    residual block as the identity; ``equalize`` equalizes each input's histogram first."""
    return FerResNet18(num_classes=num_classes, in_channels=in_channels, stem=stem, fine_to_class=fine_to_class,
                       zero_init_residual=zero_init_residual, equalize=equalize)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
