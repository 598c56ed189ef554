import pytest
import torch
from torch import nn

from ferkit.device import channels_last, describe_machine, native_bf16, uses_bf16
from ferkit.model import count_parameters, create_model


@pytest.mark.parametrize("stem, classes", [("imagenet", 4), ("cifar", 7)])
def test_shapes(stem, classes):
    model = create_model(classes, stem=stem).eval()
    assert model(torch.rand(3, 1, 48, 48)).shape == (3, classes)


def test_parameter_count():
    assert count_parameters(create_model(4)) == 11_172_292  # "about 11.17M"
    assert count_parameters(create_model(7)) == 11_172_292 + 3 * 513


def test_zero_init_residual_starts_each_block_as_the_identity():
    model = create_model(4, zero_init_residual=True).eval()
    block = model.layer1[1]  # no downsample: the block returns relu(x) when its residual branch is zero
    x = torch.randn(2, 64, 12, 12)
    assert torch.equal(block(x), torch.relu(x))
    assert all(b.bn2.weight.eq(0).all() for layer in (model.layer1, model.layer4) for b in layer)
    assert not create_model(4).layer1[1].bn2.weight.eq(0).any()  # off by default, as torchvision


class _RefBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock, written out independently of ferkit."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _RefResNet18(nn.Module):
    """torchvision.models.resnet18(num_classes=N) with a 1-channel conv1: the layout to match."""

    def __init__(self, num_classes):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, 1)
        self.layer2 = self._make_layer(128, 2)
        self.layer3 = self._make_layer(256, 2)
        self.layer4 = self._make_layer(512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [_RefBlock(self.inplanes, planes, stride, downsample), _RefBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_torchvision_layout_loads_both_ways():
    ours = create_model(4).eval()
    ref = _RefResNet18(4).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 1, 48, 48)
    torch.testing.assert_close(ref(x), ours(x))
    assert list(ref.state_dict()) == list(ours.state_dict())
    assert "layer2.0.downsample.0.weight" in ours.state_dict() and "fc.bias" in ours.state_dict()


def test_unknown_stem():
    with pytest.raises(ValueError, match="stem"):
        create_model(4, stem="vgg")


def test_fine_labels_merge_into_class_probabilities():
    groups = [0, 0, 1, 2, 1, 3, 3]  # FER2013's 7 labels -> the 4 classes
    model = create_model(4, fine_to_class=groups).eval()
    assert count_parameters(model) == count_parameters(create_model(7))
    x = torch.rand(3, 1, 48, 48)
    fine = model(x, merge=False)
    assert fine.shape == (3, 7)
    merged_by_hand = fine.softmax(1) @ torch.eye(4)[groups]
    torch.testing.assert_close(model(x).softmax(1), merged_by_hand)
    # the weights are a 7-class torchvision resnet18's
    ref = _RefResNet18(7).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(ref(x), fine)


@pytest.mark.parametrize("groups", [[0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 3, 4, 0, 1]])
def test_fine_labels_must_cover_every_class(groups):
    with pytest.raises(ValueError, match="fine_to_class"):
        create_model(4, fine_to_class=groups)


@pytest.mark.parametrize("capabilities, native", [({"avx512_bf16": True}, True), ({"amx_bf16": True}, True),
                                                   ({"avx512_bf16": False, "avx2": True}, False), ({}, False)])
def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_arithmetic(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    cpu = torch.device("cpu")
    assert native_bf16(cpu) is native and uses_bf16("auto", cpu) is native
    assert uses_bf16("bf16", cpu) and not uses_bf16("fp32", cpu)


def test_training_layout_is_channels_last_on_cpus_and_with_bf16_unless_asked():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert channels_last("auto", "fp32", cpu) and channels_last("auto", "bf16", gpu)
    assert not channels_last("auto", "fp32", gpu) and not channels_last("contiguous", "bf16", cpu)
    assert channels_last("channels_last", "fp32", gpu)


def test_the_machine_is_named_by_architecture_and_cores():
    import os
    import platform

    assert describe_machine().startswith(f"{platform.machine()}, {os.cpu_count()} cores")


def test_histogram_equalization_is_opencvs():
    import cv2
    import numpy as np

    from ferkit.model import equalize_histogram

    rng = np.random.default_rng(0)
    faces = np.stack([rng.integers(40, 120, (48, 48)), rng.normal(128, 10, (48, 48)).clip(0, 255),
                      np.full((48, 48), 77)]).astype(np.uint8)  # dim, narrow, flat
    out = equalize_histogram(torch.from_numpy(faces[:, None] / 255.0).float())
    assert out.shape == (3, 1, 48, 48) and out.min() >= 0 and out.max() <= 1
    for face, got in zip(faces[:2], out[:2, 0].numpy(), strict=True):
        assert np.abs(got * 255 - cv2.equalizeHist(face)).max() <= 1  # cv2 rounds each level to 0-255
        assert got.min() == 0 and got.max() == 1
    assert torch.allclose(out[2], torch.full((1, 48, 48), 77 / 255))  # a flat face stays as it was


def test_an_equalizing_model_ignores_brightness_and_keeps_it_in_its_checkpoint(tmp_path):
    from ferkit.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_atomic

    torch.manual_seed(0)
    model = create_model(4, equalize=True).eval()
    levels = torch.randint(0, 120, (4, 1, 48, 48)).float()
    x, brighter = levels / 255, (levels * 2 + 10) / 255  # twice the contrast, lighter: the same levels' order
    plain = create_model(4).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), model(brighter), atol=1e-5)
        assert not torch.allclose(plain(x), plain(brighter), atol=1e-2)
    save_atomic(make_checkpoint(model, epoch=0, val_accuracy=0.0, config={}), tmp_path / "eq.pth")
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / "eq.pth")).eval()
    assert loaded.equalize and count_parameters(loaded) == count_parameters(create_model(4))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
