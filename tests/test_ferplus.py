"""FER+ annotator votes: read and checked against the data row by row; label smoothing toward them."""

import numpy as np
import pytest
import torch
from conftest import REAL_CSV, ferplus_lines, needs_real_data, synthetic_rows, write_csv

from ferkit import data as data_module
from ferkit.data import DataError, load_fer2013, load_ferplus_votes
from ferkit.train import check_config, resolve_config, train
from ferkit.train.batches import split_tensors, training_targets


@pytest.fixture
def votes_csv(tmp_path):
    return write_csv(tmp_path / "fer2013new.csv.gz", ferplus_lines())


def test_votes_come_in_fer2013_label_order(fer_csv, votes_csv):
    arrays = load_fer2013(fer_csv)
    votes = load_ferplus_votes(arrays, votes_csv)
    assert votes.shape == (160, 7)
    expected = np.zeros(7)
    expected[arrays.emotion[0]] += 7
    expected[6] += 3  # neutral
    assert votes[0].tolist() == expected.tolist()
    assert votes[1].sum() == 0  # a row FER+ dropped


def test_votes_that_do_not_match_the_data_are_refused(tmp_path, fer_csv):
    arrays = load_fer2013(fer_csv)
    short = write_csv(tmp_path / "short.csv", ferplus_lines()[:-1])
    with pytest.raises(DataError, match="votes for 159 rows, but the data has 160 rows"):
        load_ferplus_votes(arrays, short)
    lines = ferplus_lines()
    lines[50] = lines[50].replace("Training", "PrivateTest")
    with pytest.raises(DataError, match="line 51: Usage 'PrivateTest' differs"):
        load_ferplus_votes(arrays, write_csv(tmp_path / "order.csv", lines))
    with pytest.raises(DataError, match="lacks column"):
        load_ferplus_votes(arrays, write_csv(tmp_path / "other.csv", synthetic_rows()))
    lines = ferplus_lines()
    lines[5] = lines[5].replace(",7,", ",seven,")
    with pytest.raises(DataError, match="line 6: vote counts must be numbers"):
        load_ferplus_votes(arrays, write_csv(tmp_path / "text.csv", lines))
    with pytest.raises(DataError, match="cannot read"):
        load_ferplus_votes(arrays, tmp_path / "missing.csv")


def test_targets_smooth_toward_the_votes(fer_csv, votes_csv, monkeypatch):
    monkeypatch.setattr(data_module, "FERPLUS_VOTES", votes_csv)
    arrays = load_fer2013(fer_csv)
    cfg = resolve_config("seed", smoothing_prior="ferplus", label_smoothing=0.3, fine_labels=True)
    _, labels = split_tensors(arrays, "Training", cfg.label_classes, torch.device("cpu"))
    targets = training_targets(arrays, labels, cfg)
    assert targets.shape == (96, 7) and torch.allclose(targets.sum(1), torch.ones(96))
    assert torch.equal(targets.argmax(1), labels)
    # row 0 is angry: 0.7 of its own, 0.3 * (7 angry + 3 neutral) / 10
    assert torch.allclose(targets[0], torch.tensor([0.7 + 0.21, 0, 0, 0, 0, 0, 0.09]))
    assert torch.allclose(targets[1], torch.full((7,), 0.3 / 7) + 0.7 * torch.eye(7)[1])  # no votes: uniform
    four = training_targets(arrays, split_tensors(arrays, "Training", 4, torch.device("cpu"))[1],
                           resolve_config("seed", smoothing_prior="ferplus", label_smoothing=0.3))
    assert four.shape == (96, 4) and torch.allclose(four[0], torch.tensor([0.91, 0, 0, 0.09]))


def test_training_smoothed_toward_the_votes(fer_csv, votes_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "FERPLUS_VOTES", votes_csv)
    cfg = resolve_config("cpu", data=str(fer_csv), out=str(tmp_path / "run"), epochs=1, batch_size=32,
                         device="cpu", smoothing_prior="ferplus", label_smoothing=0.3, mixup=0.2)
    record = train(cfg)
    assert record["config"]["smoothing_prior"] == "ferplus" and 0 <= record["accuracy"] <= 1
    with pytest.raises(ValueError, match="focal"):
        check_config(resolve_config("seed", smoothing_prior="ferplus", loss="focal"))


def test_ferplus_labels_train_on_vote_shares_and_choose_on_the_majority(fer_csv, votes_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "FERPLUS_VOTES", votes_csv)
    arrays = load_fer2013(fer_csv)
    cfg = resolve_config("seed", labels="ferplus")
    _, labels = split_tensors(arrays, "Training", 4, torch.device("cpu"))
    targets = training_targets(arrays, labels, cfg)
    assert torch.allclose(targets[0], torch.tensor([0.7, 0, 0, 0.3]))  # 7 angry votes, 3 neutral
    assert torch.equal(targets[1], torch.eye(4)[labels[1]])  # no votes: FER2013's label
    images, majority = split_tensors(arrays, "PublicTest", 4, torch.device("cpu"), "ferplus")
    assert len(images) == len(majority) == 32  # every synthetic row has a clear majority
    for classes, fine in ((8, False), (4, True)):
        record = train(resolve_config("cpu", data=str(fer_csv), out=str(tmp_path / f"c{classes}"), epochs=1,
                                      batch_size=32, device="cpu", labels="ferplus", classes=classes,
                                      fine_labels=fine, mixup=0.2, class_weights=True))
        assert record["labels"] == "ferplus" and len(record["class_names"]) == classes
    with pytest.raises(ValueError, match="--classes 8 is FER"):
        check_config(resolve_config("seed", classes=8))
    with pytest.raises(ValueError, match="dataloader"):
        check_config(resolve_config("seed", labels="ferplus", pipeline="dataloader"))


@needs_real_data
def test_the_shipped_votes_match_the_real_file():
    votes = load_ferplus_votes(load_fer2013(REAL_CSV))
    assert votes.shape == (35_887, 7)
    assert votes[0].tolist() == [3, 2, 0, 0, 1, 0, 4]  # FER+'s first row: 4 neutral, 1 sad, 3 angry, 2 disgust
    assert (votes.sum(1) == 0).sum() == 178  # dropped by FER+, or voted contempt/unknown/not-a-face only


def _with_votes(lines, row, votes):
    """FER+ lines with the ten vote counts of data row ``row`` replaced."""
    lines = list(lines)
    usage, name, *_ = lines[row + 1].split(",")
    lines[row + 1] = f"{usage},{name},{','.join(map(str, votes))}"
    return lines


def test_majority_labels_merge_into_each_task_and_drop_what_has_none(tmp_path, fer_csv, monkeypatch):
    from ferkit.data import ferplus_labels, split_labels

    arrays = load_fer2013(fer_csv)
    lines = ferplus_lines()
    lines = _with_votes(lines, 2, [4, 0, 0, 0, 0, 0, 0, 0, 4, 2])  # a tie: neutral 4, unknown 4
    lines = _with_votes(lines, 3, [2, 0, 0, 0, 0, 0, 0, 0, 1, 7])  # not a face
    lines = _with_votes(lines, 4, [1, 0, 0, 0, 0, 0, 0, 6, 0, 3])  # contempt
    lines = _with_votes(lines, 5, [0, 0, 3, 0, 0, 0, 0, 0, 0, 0])  # surprise (FER2013 says sad)
    path = write_csv(tmp_path / "votes.csv", lines)
    expected7 = arrays.emotion.copy()  # every other row: 7 votes for its own label, 3 for neutral
    expected7[[1, 2, 3, 4]] = -1  # dropped by FER+, tie, not-a-face, contempt
    expected7[5] = 5
    assert ferplus_labels(arrays, 7, path).tolist() == expected7.tolist()
    merged = np.array([-1 if e < 0 else (0, 0, 1, 2, 1, 3, 3)[e] for e in expected7])
    assert ferplus_labels(arrays, 4, path).tolist() == merged.tolist()
    eight = ferplus_labels(arrays, 8, path)
    assert eight[4] == 7 and eight[5] == 2 and eight[0] == 4 and (eight[[1, 2, 3]] == -1).all()  # 0: angry -> anger
    monkeypatch.setattr(data_module, "FERPLUS_VOTES", path)
    public = split_labels(arrays, "PublicTest", 4, "ferplus")
    assert len(public) == 32 and public.tolist() == merged[arrays.rows("PublicTest")].tolist()
    fer2013 = np.array([(0, 0, 1, 2, 1, 3, 3)[e] for e in arrays.emotion])
    assert split_labels(arrays, "PublicTest", 4).tolist() == fer2013[arrays.rows("PublicTest")].tolist()
    with pytest.raises(ValueError, match="unknown label set"):
        split_labels(arrays, "PublicTest", 4, "affectnet")


@needs_real_data
def test_real_majority_labels_disagree_with_fer2013_on_a_third():
    from ferkit.data import split_labels

    arrays = load_fer2013(REAL_CSV)
    fer, plus = split_labels(arrays, "PrivateTest", 4), split_labels(arrays, "PrivateTest", 4, "ferplus")
    kept = plus >= 0
    assert 3300 < kept.sum() < 3589 and 0.65 < (fer[kept] == plus[kept]).mean() < 0.75
