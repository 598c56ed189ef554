"""Distillation: `ferkit teach` writes a model's logits for every Training image and its mirror;
`ferkit train --teacher` mixes their probabilities into the targets, for the right images or not at all."""

import numpy as np
import pytest
import torch
from conftest import synthetic_rows, write_csv

from ferkit.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ferkit.cli import main
from ferkit.data import EMOTIONS_7, class_mapping, load_fer2013
from ferkit.model import create_model
from ferkit.train import BEST_CHECKPOINT, resolve_config, train
from ferkit.train.batches import split_tensors, training_targets
from ferkit.train.distill import teacher_probabilities, training_pixels_sha256, write_teacher

FINE_TO_4 = class_mapping(4)


@pytest.fixture
def fine_checkpoint(tmp_path):
    """A random 4-class model fitted on FER2013's seven labels (as the cpu and fast recipes train)."""
    torch.manual_seed(0)
    path = tmp_path / "fine.pth"
    save_atomic(make_checkpoint(create_model(4, fine_to_class=FINE_TO_4), epoch=0, val_accuracy=0.0, config={}), path)
    return path


def _teacher_file(path, arrays, logits, labels=EMOTIONS_7):
    np.savez(path, logits=logits.astype(np.float16), labels=np.array(labels),
             rows=np.flatnonzero(arrays.rows("Training")), pixels_sha256=np.array(training_pixels_sha256(arrays)))
    return path


def test_teach_writes_the_fine_logits_of_each_image_and_its_mirror(fer_csv, fine_checkpoint, tmp_path, capsys):
    out = tmp_path / "teacher.npz"
    assert main(["teach", str(fine_checkpoint), "--data", str(fer_csv), "--out", str(out), "--device", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out
    arrays = load_fer2013(fer_csv)
    with np.load(out, allow_pickle=False) as f:
        logits, labels = f["logits"], tuple(f["labels"])
    pixels, _ = arrays.split("Training")
    assert labels == EMOTIONS_7 and logits.shape == (len(pixels), 2, 7) and logits.dtype == np.float16
    net = create_model(4, fine_to_class=FINE_TO_4)
    net.load_state_dict(load_checkpoint(fine_checkpoint)["model_state_dict"])
    x = torch.from_numpy(pixels[:5]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        expected = torch.stack([net.eval()(x, merge=False), net(x.flip(-1), merge=False)], 1).numpy()
    np.testing.assert_allclose(logits[:5], expected, atol=2e-2)  # fp16

    probs = torch.from_numpy(logits.astype(np.float32)).softmax(-1).mean(1).numpy()
    np.testing.assert_allclose(teacher_probabilities(out, arrays, 7), probs, atol=1e-6)
    merged = teacher_probabilities(out, arrays, 4)  # FER2013's seven summed into the four classes
    np.testing.assert_allclose(merged[:, 0], probs[:, 0] + probs[:, 1], atol=1e-6)  # angry + disgust
    np.testing.assert_allclose(merged.sum(1), 1, atol=1e-5)


def test_a_teacher_of_the_true_labels_trains_as_the_labels_do(fer_csv, tmp_path):
    """A teacher certain of each image's own label (w = 1) gives the run without a teacher, to the
    last weight: its targets reach the images they were written for, in their order."""
    arrays = load_fer2013(fer_csv)
    _, emotion = arrays.split("Training")
    teacher = _teacher_file(tmp_path / "labels.npz", arrays, np.repeat(30 * np.eye(7)[emotion][:, None], 2, 1))
    common = dict(data=str(fer_csv), epochs=2, device="cpu", batch_size=32, precision="fp32")
    plain = train(resolve_config("seed", out=str(tmp_path / "plain"), **common))
    taught = train(resolve_config("seed", out=str(tmp_path / "taught"), teacher=str(teacher), teacher_weight=1.0,
                                  **common))
    assert taught["config"]["teacher"] == str(teacher)
    a, b = (load_checkpoint(tmp_path / run / BEST_CHECKPOINT)["model_state_dict"] for run in ("plain", "taught"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3, msg=name)
    assert plain["accuracy"] == taught["accuracy"]

    shuffled = _teacher_file(tmp_path / "shuffled.npz", arrays,
                             np.repeat(30 * np.eye(7)[np.roll(emotion, 1)][:, None], 2, 1))
    cfg = resolve_config("seed", out=str(tmp_path / "x"), teacher=str(shuffled), teacher_weight=1.0, **common)
    x, y = split_tensors(arrays, "Training", 4, torch.device("cpu"))
    assert not torch.equal(training_targets(arrays, y, cfg).argmax(1), y)  # the test can fail


def test_teacher_mixes_with_the_recipes_targets(fer_csv, fine_checkpoint, tmp_path):
    arrays = load_fer2013(fer_csv)
    teacher = write_teacher(fine_checkpoint, arrays, tmp_path / "t.npz")
    x, y = split_tensors(arrays, "Training", 7, torch.device("cpu"))
    fast = resolve_config("fast", data=str(fer_csv), out=str(tmp_path / "f"))
    taught = resolve_config("fast", data=str(fer_csv), out=str(tmp_path / "f"), teacher=str(teacher),
                            teacher_weight=0.25)
    expected = 0.75 * training_targets(arrays, y, fast) + 0.25 * torch.from_numpy(teacher_probabilities(teacher,
                                                                                                       arrays, 7))
    torch.testing.assert_close(training_targets(arrays, y, taught), expected)
    record = train(resolve_config("fast", data=str(fer_csv), out=str(tmp_path / "run"), epochs=1, device="cpu",
                                  batch_size=32, teacher=str(teacher)))
    assert 0 <= record["accuracy"] <= 1


def test_teacher_files_that_cannot_teach_are_refused(fer_csv, fine_checkpoint, tmp_path, capsys):
    arrays = load_fer2013(fer_csv)
    other = load_fer2013(write_csv(tmp_path / "other.csv", synthetic_rows(seed=1)))
    elsewhere = write_teacher(fine_checkpoint, other, tmp_path / "other.npz")
    with pytest.raises(ValueError, match="written for other data"):
        teacher_probabilities(elsewhere, arrays, 4)
    four = _teacher_file(tmp_path / "four.npz", arrays, np.zeros((int(arrays.rows("Training").sum()), 2, 4)),
                         labels=("angry", "sad", "happy", "neutral"))
    with pytest.raises(ValueError, match="cannot be merged"):
        teacher_probabilities(four, arrays, 7)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, logits=np.array([object()], dtype=object), labels=np.array(EMOTIONS_7),
             rows=np.arange(3), pixels_sha256=np.array("x"))
    with pytest.raises(ValueError, match="not a readable .npz"):
        teacher_probabilities(pickled, arrays, 4)
    (tmp_path / "text.npz").write_text("hello")
    for bad in ("text.npz", "missing.npz"):
        assert main(["train", "--data", str(fer_csv), "--out", str(tmp_path / "r"), "--epochs", "1",
                     "--device", "cpu", "--teacher", str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --teacher {tmp_path / bad}") and "Traceback" not in err
    assert not (tmp_path / "r" / BEST_CHECKPOINT).exists()
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    assert main(["teach", str(onnx), "--data", str(fer_csv), "--out", str(tmp_path / "t.npz")]) == 2
    assert "ONNX" in capsys.readouterr().err
