"""Distillation from the teacher bank: `ferkit teach` writes a model's logits for every FER2013 image
(all three splits) under its views, with a record of where they came from and what they score;
`ferkit train --teacher A B` mixes the teachers' mean probabilities into the targets, for the right
images or not at all."""

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import synthetic_rows, write_csv

from ferkit.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ferkit.cli import main
from ferkit.data import EMOTIONS_7, class_mapping, load_fer2013, merge_columns, split_labels
from ferkit.model import create_model
from ferkit.train import BEST_CHECKPOINT, resolve_config, train
from ferkit.train.batches import split_tensors, training_targets
from ferkit.train.distill import (
    pixels_sha256,
    read_teacher,
    teacher_probabilities,
    teacher_scores,
    train_command,
    write_teacher,
)

FINE_TO_4 = class_mapping(4)


@pytest.fixture
def fine_checkpoint(tmp_path):
    """A random 4-class model fitted on FER2013's seven labels (as the cpu and fast recipes train)."""
    torch.manual_seed(0)
    path = tmp_path / "fine.pth"
    config = {**vars(resolve_config("fast")), "teacher": ["a", "b"], "data": "x.csv"}
    save_atomic(make_checkpoint(create_model(4, fine_to_class=FINE_TO_4), epoch=3, val_accuracy=0.0, config=config),
                path)
    return path


@pytest.fixture
def face_folder(tmp_path, fer_csv):
    """A labelled folder of crops (happiness/, anger/, contempt/): FER2013 images written as PNGs."""
    pixels, _ = load_fer2013(fer_csv).split("PublicTest")
    root = tmp_path / "faces"
    for i, label in enumerate(("happiness", "anger", "contempt", "happiness", "sadness")):
        (root / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / label / f"{i}.png"), pixels[i])
    return root


def _teacher(path, arrays, logits, labels=EMOTIONS_7, views="flip"):
    """A teacher folder holding ``logits`` (N, V, L) for every image of ``arrays``."""
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "logits.npz", logits=logits.astype(np.float16), labels=np.array(labels), views=np.array(views),
             pixels_sha256=np.array(pixels_sha256(arrays)))
    return path


def _label_teacher(path, arrays, labels):
    """A teacher certain of ``labels`` (FER2013's 0-6, one per image) on both views."""
    return _teacher(path, arrays, np.repeat(30 * np.eye(7)[labels][:, None], 2, 1))


def test_teach_writes_the_fine_logits_of_every_image_and_its_record(fer_csv, fine_checkpoint, face_folder, tmp_path,
                                                                     capsys):
    out = tmp_path / "bank" / "t1"
    assert main(["teach", str(fine_checkpoint), "--data", str(fer_csv), "--out", str(out), "--device", "cpu",
                 "--folder", str(face_folder)]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "faces balanced" in printed
    arrays = load_fer2013(fer_csv)
    teacher = read_teacher(out, arrays)
    assert teacher.labels == EMOTIONS_7 and teacher.views == "flip"
    assert teacher.logits.shape == (len(arrays.pixels), 2, 7) and teacher.logits.dtype == np.float16
    net = create_model(4, fine_to_class=FINE_TO_4)
    net.load_state_dict(load_checkpoint(fine_checkpoint)["model_state_dict"])
    public = np.flatnonzero(arrays.rows("PublicTest"))[:5]  # every split is there, in file order
    x = torch.from_numpy(arrays.pixels[public]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        expected = torch.stack([net.eval()(x, merge=False), net(x.flip(-1), merge=False)], 1).numpy()
    np.testing.assert_allclose(teacher.logits[public], expected, atol=2e-2)  # fp16
    files, folder_logits = teacher.folders["faces"]
    assert files == ["anger/1.png", "happiness/0.png", "happiness/3.png", "sadness/4.png"]  # contempt: no class
    np.testing.assert_allclose(folder_logits[files.index("anger/1.png")], expected[1], atol=2e-2)

    record = json.loads((out / "teacher.json").read_text())
    import hashlib
    assert record["files"]["logits.npz"] == hashlib.sha256((out / "logits.npz").read_bytes()).hexdigest()
    assert record["command"].startswith("ferkit train --recipe fast --teacher a b --data x.csv")
    assert record["epoch"] == 3 and record["views"] == "flip"
    probs = teacher.probabilities(teacher.logits, 4)
    y = split_labels(arrays, "PublicTest", 4)
    accuracy = (probs[arrays.rows("PublicTest")].argmax(1) == y).mean()
    assert record["scores"]["flip"]["PublicTest fer2013"] == round(float(accuracy), 4)
    assert set(record["scores"]) == {"flip"}  # a file of flip views alone: "all" would say the same again
    assert set(record["scores"]["flip"]) == {"PublicTest fer2013", "PublicTest ferplus", "faces balanced"}


def test_teacher_prior_reweights_each_teacher_to_the_reference_mean(fer_csv, tmp_path):
    arrays = load_fer2013(fer_csv)
    rng = np.random.default_rng(0)
    soft = _teacher(tmp_path / "soft", arrays, np.repeat(rng.normal(size=(len(arrays.pixels), 1, 7)), 2, 1))
    skewed = rng.normal(size=(len(arrays.pixels), 1, 7)) + np.array([3.0, 0, 0, 0, 0, 0, -2.0])  # calls angry often
    skewed = _teacher(tmp_path / "skewed", arrays, np.repeat(skewed, 2, 1))
    as_is = teacher_probabilities([soft], arrays, 4)
    # a teacher matched to itself is unchanged (to fp16 logits' precision)
    np.testing.assert_allclose(teacher_probabilities([soft], arrays, 4, prior=soft), as_is, atol=1e-6)
    # a skewed one's mean over Training becomes the reference's; what it ranks first within an image is kept
    matched = teacher_probabilities([skewed], arrays, 4, prior=soft)
    np.testing.assert_allclose(matched.mean(0), as_is.mean(0), atol=1e-4)
    assert not np.allclose(teacher_probabilities([skewed], arrays, 4).mean(0), as_is.mean(0), atol=1e-2)
    plain = teacher_probabilities([skewed], arrays, 4)
    ratio = matched / plain  # one factor per class, the same for every image, up to each row's renormalization
    np.testing.assert_allclose(ratio / ratio[:, :1], np.broadcast_to(ratio[:1] / ratio[:1, :1], ratio.shape),
                               rtol=1e-5)
    # a student fitting the seven labels of four classes (fine labels): matched in the four, its seven summed agree
    fine = teacher_probabilities([skewed], arrays, 7, prior=soft, classes=4)
    np.testing.assert_allclose(merge_columns(fine, 4), matched, atol=1e-6)


def test_the_bank_mean_and_its_scores(fer_csv, tmp_path):
    arrays = load_fer2013(fer_csv)
    right = _label_teacher(tmp_path / "right", arrays, arrays.emotion)
    wrong = _teacher(tmp_path / "wrong", arrays, np.repeat(30 * np.eye(7)[(arrays.emotion + 1) % 7][:, None], 2, 1))
    training = arrays.rows("Training")
    one = teacher_probabilities([right], arrays, 7)
    np.testing.assert_allclose(one, np.eye(7)[arrays.emotion[training]], atol=1e-6)
    both = teacher_probabilities([right, wrong], arrays, 7)
    np.testing.assert_allclose(both.max(1), 0.5, atol=1e-6)  # the mean of two certain teachers
    merged = teacher_probabilities([right], arrays, 4)  # FER2013's seven summed into the four classes
    np.testing.assert_allclose(merged, np.eye(4)[np.array(FINE_TO_4)[arrays.emotion[training]]], atol=1e-6)
    hot = teacher_probabilities([right], arrays, 7, temperature=100.0)  # softened toward uniform
    assert hot.max() < 0.2
    assert teacher_scores([read_teacher(right, arrays)], arrays)["flip"]["PublicTest fer2013"] == 1.0
    assert teacher_scores([read_teacher(wrong, arrays)], arrays)["flip"]["PublicTest fer2013"] < 1.0
    # twelve views: scored on the whole image and its mirror, and on all twelve
    twelve = np.repeat(30 * np.eye(7)[arrays.emotion][:, None], 12, 1)
    twelve[:, 1:6] = 30 * np.eye(7)[(arrays.emotion + 1) % 7][:, None]  # crops that are wrong, all five
    crops = read_teacher(_teacher(tmp_path / "crops", arrays, twelve, views="tencrop_full"), arrays)
    scores = teacher_scores([crops], arrays)
    assert scores["flip"]["PublicTest fer2013"] == 1.0 and scores["all"]["PublicTest fer2013"] == 1.0  # 7 of 12
    crops.logits[:, 7:] = crops.logits[:, 1:2]  # the crops' mirrors wrong too: flip (views 0 and 6) still right
    scores = teacher_scores([crops], arrays, num_classes=7)  # in 7 classes, where every label+1 is another class
    assert scores["flip"]["PublicTest fer2013"] == 1.0 and scores["all"]["PublicTest fer2013"] == 0.0


def test_a_teacher_of_the_true_labels_trains_as_the_labels_do(fer_csv, tmp_path):
    """A teacher certain of each image's own label (w = 1) gives the run without a teacher, to the
    last weight: its targets reach the images they were written for, in their order."""
    arrays = load_fer2013(fer_csv)
    teacher = _label_teacher(tmp_path / "labels", arrays, arrays.emotion)
    common = dict(data=str(fer_csv), epochs=2, device="cpu", batch_size=32, precision="fp32")
    plain = train(resolve_config("seed", out=str(tmp_path / "plain"), **common))
    taught = train(resolve_config("seed", out=str(tmp_path / "taught"), teacher=(str(teacher),), teacher_weight=1.0,
                                  **common))
    assert taught["config"]["teacher"] == (str(teacher),)
    a, b = (load_checkpoint(tmp_path / run / BEST_CHECKPOINT)["model_state_dict"] for run in ("plain", "taught"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3, msg=name)
    assert plain["accuracy"] == taught["accuracy"]

    shuffled = _label_teacher(tmp_path / "shuffled", arrays, np.roll(arrays.emotion, 1))
    cfg = resolve_config("seed", out=str(tmp_path / "x"), teacher=(str(shuffled),), teacher_weight=1.0, **common)
    x, y = split_tensors(arrays, "Training", 4, torch.device("cpu"))
    assert not torch.equal(training_targets(arrays, y, cfg).argmax(1), y)  # the test can fail


def test_teachers_mix_with_the_recipes_targets(fer_csv, fine_checkpoint, tmp_path, capsys):
    arrays = load_fer2013(fer_csv)
    t1 = write_teacher(fine_checkpoint, arrays, tmp_path / "t1")
    t2 = _label_teacher(tmp_path / "t2", arrays, arrays.emotion)
    x, y = split_tensors(arrays, "Training", 7, torch.device("cpu"))
    fast = resolve_config("fast", data=str(fer_csv), out=str(tmp_path / "f"))
    taught = resolve_config("fast", data=str(fer_csv), out=str(tmp_path / "f"), teacher=(str(t1), str(t2)),
                            teacher_weight=0.25, teacher_temperature=2.0)
    bank = teacher_probabilities([t1, t2], arrays, 7, 2.0)
    expected = 0.75 * training_targets(arrays, y, fast) + 0.25 * torch.from_numpy(bank).float()
    torch.testing.assert_close(training_targets(arrays, y, taught), expected)
    assert main(["train", "--recipe", "fast", "--data", str(fer_csv), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--device", "cpu", "--batch-size", "32", "--teacher", str(t1), str(t2)]) == 0
    assert load_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)["config"]["teacher"] == (str(t1), str(t2))
    assert f"--teacher {t1} {t2}" in train_command(load_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)["config"])


def test_teacher_files_that_cannot_teach_are_refused(fer_csv, fine_checkpoint, tmp_path, capsys):
    arrays = load_fer2013(fer_csv)
    other = load_fer2013(write_csv(tmp_path / "other.csv", synthetic_rows(seed=1)))
    elsewhere = write_teacher(fine_checkpoint, other, tmp_path / "other")
    with pytest.raises(ValueError, match="written for other data"):
        teacher_probabilities([elsewhere], arrays, 4)
    four = _teacher(tmp_path / "four", arrays, np.zeros((len(arrays.pixels), 2, 4)),
                    labels=("angry", "sad", "happy", "neutral"))
    with pytest.raises(ValueError, match="cannot be merged"):
        teacher_probabilities([four], arrays, 7)
    with pytest.raises(ValueError, match="do not fit 'tencrop' views"):
        teacher_probabilities([_teacher(tmp_path / "shape", arrays, np.zeros((len(arrays.pixels), 2, 7)),
                                        views="tencrop")], arrays, 7)
    old = tmp_path / "old"  # a teacher file of ferkit 0.4 (Training rows only, no views)
    old.mkdir()
    np.savez(old / "logits.npz", logits=np.zeros((3, 2, 7), np.float16), labels=np.array(EMOTIONS_7),
             rows=np.arange(3), pixels_sha256=np.array("x"))
    with pytest.raises(ValueError, match="not a teacher file of this version"):
        teacher_probabilities([old], arrays, 7)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    np.savez(pickled / "logits.npz", logits=np.array([object()], dtype=object), labels=np.array(EMOTIONS_7),
             views=np.array("flip"), pixels_sha256=np.array("x"))
    with pytest.raises(ValueError, match="not a readable .npz"):
        teacher_probabilities([pickled], arrays, 4)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "logits.npz").write_text("hello")
    for bad in ("text", "missing"):
        assert main(["train", "--data", str(fer_csv), "--out", str(tmp_path / "r"), "--epochs", "1",
                     "--device", "cpu", "--teacher", str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --teacher {tmp_path / bad}") and "Traceback" not in err
    assert not (tmp_path / "r" / BEST_CHECKPOINT).exists()
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    assert main(["teach", str(onnx), "--data", str(fer_csv), "--out", str(tmp_path / "t")]) == 2
    assert "ONNX" in capsys.readouterr().err
    assert main(["teach", str(fine_checkpoint), "--data", str(fer_csv), "--out", str(tmp_path / "t.npz")]) == 2
    assert "a teacher is a folder" in capsys.readouterr().err
