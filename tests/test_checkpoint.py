import pickle

import pytest
import torch
from torch import nn

from ferkit.checkpoint import (
    CheckpointError,
    average_checkpoints,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_atomic,
)
from ferkit.model import create_model


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model(7, stem="cifar").eval()
    optimizer = torch.optim.Adam(model.parameters())
    path = tmp_path / "c.pth"
    save_atomic(make_checkpoint(model, epoch=3, val_accuracy=0.5, config={"lr": 1e-3},
                                optimizer_state=optimizer.state_dict()), path)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["val_accuracy"] == 0.5 and len(ckpt["class_names"]) == 7
    assert ckpt["class_mapping"] == list(range(7)) and "optimizer_state_dict" in ckpt
    loaded = model_from_checkpoint(ckpt, path).eval()
    x = torch.rand(2, 1, 48, 48)
    torch.testing.assert_close(loaded(x), model(x))


def test_half_precision_copy_is_close(tmp_path):
    model = create_model(4).eval()
    path = tmp_path / "half.pt"
    save_atomic(make_checkpoint(model, epoch=1, val_accuracy=0.1, config={}, half=True), path)
    ckpt = load_checkpoint(path)
    assert ckpt["model_state_dict"]["fc.weight"].dtype == torch.float16
    x = torch.rand(2, 1, 48, 48)
    torch.testing.assert_close(model_from_checkpoint(ckpt).eval()(x), model(x), atol=2e-2, rtol=2e-2)


def test_bare_state_dict_is_accepted(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(create_model(7).state_dict(), path)
    assert model_from_checkpoint(load_checkpoint(path)).num_classes == 7


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pth")


def test_truncated_file(tmp_path, random_checkpoint):
    path = tmp_path / "cut.pth"
    path.write_bytes(random_checkpoint.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "text.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create a file if ever unpickled


def test_pickle_needing_code_execution_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "payload": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused") as refused:
        load_checkpoint(path)
    assert not marker.exists()
    assert "weights_only" not in str(refused.value)  # never torch's advice to unpickle it anyway
    assert "Unsupported global" in str(refused.value)  # but its diagnosis
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)
    assert not marker.exists()


def test_foreign_architecture(tmp_path):
    path = tmp_path / "mlp.pth"
    torch.save(nn.Sequential(nn.Linear(4, 4)).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a ResNet-18"):
        load_checkpoint(path)
    rgb = create_model(4)
    rgb.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    torch.save(rgb.state_dict(), path)  # an RGB torchvision-style ResNet-18
    with pytest.raises(CheckpointError, match="3 input channels"):
        model_from_checkpoint(load_checkpoint(path), path)


def test_wrong_class_count(tmp_path):
    path = tmp_path / "seven.pth"
    save_atomic(make_checkpoint(create_model(7), epoch=1, val_accuracy=0.0, config={}), path)
    with pytest.raises(CheckpointError, match="7-class model, expected 4"):
        model_from_checkpoint(load_checkpoint(path), path, num_classes=4)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["num_classes"] = 4  # metadata that lies about the weights
    ckpt["class_names"] = ckpt["class_names"][:4]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(load_checkpoint(path), path)


def test_interrupted_save_keeps_the_old_file(tmp_path, random_checkpoint):
    path = tmp_path / "keep.pth"
    path.write_bytes(random_checkpoint.read_bytes())

    class Boom(dict):
        def __reduce_ex__(self, protocol):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_atomic({"x": Boom()}, path)
    assert load_checkpoint(path)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pth"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_refused(tmp_path, bad):
    model = create_model(4)
    with torch.no_grad():
        model.fc.bias[2] = bad
    path = tmp_path / "broken.pth"
    save_atomic(make_checkpoint(model, epoch=0, val_accuracy=0.0, config={}), path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values \(fc.bias\)"):
        load_checkpoint(path)


def test_average_checkpoints_is_the_mean_of_every_float_tensor(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_model(num_classes=4)
        model.bn1.running_mean.uniform_()
        paths.append(tmp_path / f"m{seed}.pth")
        save_atomic(make_checkpoint(model, epoch=1, val_accuracy=0.5, config={"seed": seed}), paths[-1])
    soup = average_checkpoints(paths)
    a, b = (load_checkpoint(p)["model_state_dict"] for p in paths)
    for name in ("conv1.weight", "fc.bias", "bn1.running_mean"):
        assert torch.allclose(soup["model_state_dict"][name], (a[name] + b[name]) / 2)
    assert soup["config"] == {"seed": 0} and soup["soup"] == [str(p) for p in paths]
    save_atomic(soup, tmp_path / "soup.pth")
    model_from_checkpoint(load_checkpoint(tmp_path / "soup.pth"))  # loads as any checkpoint


def test_average_checkpoints_refuses_different_models(tmp_path):
    for name, classes in (("four.pth", 4), ("seven.pth", 7)):
        save_atomic(make_checkpoint(create_model(num_classes=classes), epoch=1, val_accuracy=0.5, config={}),
                    tmp_path / name)
    with pytest.raises(CheckpointError, match="seven.pth: not the same model"):
        average_checkpoints([tmp_path / "four.pth", tmp_path / "seven.pth"])
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([tmp_path / "four.pth"])
