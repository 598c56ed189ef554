import json
import subprocess
import sys

import pytest
import torch

from ferkit.checkpoint import load_checkpoint
from ferkit.cli import main as cli_main
from ferkit.train import BEST_CHECKPOINT, RECIPES, TrainConfig, resolve_config, train

ARTIFACTS = ["fer_resnet18_best.pth", "training_history.png", "confusion_matrix.png",
             "classification_report.txt", "metrics.json", "history.json"]


def _run(fer_csv, out, **overrides):
    settings = {"data": str(fer_csv), "out": str(out), "epochs": 2, "device": "cpu", **overrides}
    cfg = resolve_config("seed", **settings)
    return train(cfg)


def test_two_epochs_write_every_artifact(fer_csv, tmp_path):
    record = _run(fer_csv, tmp_path / "run")
    for name in ARTIFACTS:
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    ckpt = load_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)
    assert set(ckpt) >= {"model_state_dict", "optimizer_state_dict", "epoch", "val_accuracy", "class_names",
                         "class_mapping", "config"}
    assert ckpt["class_names"] == ["angry", "sad", "happy", "neutral"]
    assert ckpt["class_mapping"] == [0, 0, 1, 2, 1, 3, 3]
    assert ckpt["config"]["epochs"] == 2 and ckpt["config"]["lr"] == 1e-3 and ckpt["epoch"] in (1, 2)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["train_loss"]) == 2 and ckpt["val_accuracy"] == max(history["val_accuracy"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(record)) and metrics["split"] == "PrivateTest"
    assert metrics["num_samples"] == 32 and 0 <= metrics["accuracy"] <= 1
    report = (tmp_path / "run" / "classification_report.txt").read_text()
    assert all(word in report for word in ("precision", "recall", "f1-score", "support", "neutral", "accuracy"))


def test_same_seed_same_numbers(fer_csv, tmp_path):
    a = _run(fer_csv, tmp_path / "a", epochs=1)
    b = _run(fer_csv, tmp_path / "b", epochs=1)
    c = _run(fer_csv, tmp_path / "c", epochs=1, seed=1)
    wa = load_checkpoint(tmp_path / "a" / BEST_CHECKPOINT)["model_state_dict"]
    wb = load_checkpoint(tmp_path / "b" / BEST_CHECKPOINT)["model_state_dict"]
    wc = load_checkpoint(tmp_path / "c" / BEST_CHECKPOINT)["model_state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["fc.weight"], wc["fc.weight"])
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert c["config"]["seed"] == 1


def test_seven_classes_and_dataloader_pipeline(fer_csv, tmp_path):
    record = _run(fer_csv, tmp_path / "seven", epochs=1, classes=7, pipeline="dataloader", stem="cifar")
    assert len(record["class_names"]) == 7 and record["config"]["pipeline"] == "dataloader"


def test_evaluate_cli_reproduces_training_report(fer_csv, tmp_path, capsys):
    record = _run(fer_csv, tmp_path / "run", epochs=1)
    code = cli_main(["evaluate", "--checkpoint", str(tmp_path / "run" / BEST_CHECKPOINT), "--data", str(fer_csv),
                     "--as-trained", "--out", str(tmp_path / "eval")])
    assert code == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["accuracy"] == record["accuracy"] and again["confusion_matrix"] == record["confusion_matrix"]
    assert "precision" in capsys.readouterr().out
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "run" / BEST_CHECKPOINT), "--data", str(fer_csv),
                     "--split", "PublicTest", "--tta", "tencrop", "--precision", "fp32",
                     "--out", str(tmp_path / "tta")]) == 0
    tta = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert tta["tta"] == "tencrop" and tta["precision"] == "fp32" and tta["split"] == "PublicTest"
    assert tta["num_samples"] == 32


def test_export_weights_cli(fer_csv, tmp_path):
    _run(fer_csv, tmp_path / "run", epochs=1)
    assert cli_main(["export", str(tmp_path / "run" / BEST_CHECKPOINT), "--weights", str(tmp_path / "w.pt")]) == 0
    ckpt = load_checkpoint(tmp_path / "w.pt")
    assert "optimizer_state_dict" not in ckpt and ckpt["model_state_dict"]["fc.weight"].dtype == torch.float16


def test_seed_recipe_is_the_documented_baseline():
    seed = resolve_config("seed")
    assert (seed.epochs, seed.batch_size, seed.lr, seed.optimizer, seed.step_size, seed.gamma) == (
        20, 64, 1e-3, "adam", 7, 0.1)
    assert (seed.flip, seed.rotation, seed.min_crop, seed.stem) == (0.5, 10.0, 0.9, "imagenet")
    assert set(RECIPES["seed"]) <= {f for f in TrainConfig.__dataclass_fields__}


def test_bad_data_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    assert cli_main(["train", "--data", str(bad), "--out", str(tmp_path / "o"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "line 2: expected 2304 pixel values, found 3" in err
    with pytest.raises(SystemExit):
        cli_main(["train", "--optimizer", "lion"])


def test_module_entry_point(fer_csv, tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "ferkit", "train", "--data", str(fer_csv), "--out", str(out), "--epochs", "1",
         "--batch-size", "32", "--device", "cpu", "--classes", "7", "--seed", "3", "--workers", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "PrivateTest" in result.stdout and (out / "metrics.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["config"]["batch_size"] == 32


@pytest.mark.parametrize("flags, message", [
    (["--step-size", "0"], "--step-size must be at least 1, got 0"),
    (["--label-smoothing", "2"], "--label-smoothing must be between 0 and 1, got 2.0"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be at least 1, got 0"),
    (["--lr", "0"], "--lr must be above 0"),
    (["--ema", "1"], "--ema must be between 0 and 0.9999"),
])
def test_bad_flags_are_refused_before_any_work(tmp_path, capsys, flags, message):
    """Checked before the data is even read: the missing file is not what the error names."""
    missing = tmp_path / "not_there.csv"
    assert cli_main(["train", "--data", str(missing), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "not_there" not in err and not (tmp_path / "o").exists()


def test_a_run_is_never_silently_replaced(fer_csv, tmp_path, capsys):
    _run(fer_csv, tmp_path / "run", epochs=1)
    before = (tmp_path / "run" / BEST_CHECKPOINT).read_bytes()
    argv = ["train", "--data", str(fer_csv), "--out", str(tmp_path / "run"), "--epochs", "1", "--device", "cpu"]
    assert cli_main([*argv, "--classes", "7"]) == 2
    assert "holds another run (last.pth, fer_resnet18_best.pth)" in capsys.readouterr().err
    assert (tmp_path / "run" / BEST_CHECKPOINT).read_bytes() == before
    assert cli_main([*argv, "--classes", "7", "--overwrite"]) == 0
    assert load_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)["class_names"][1] == "disgust"
    (tmp_path / "file").write_text("x")
    assert cli_main([*argv[:4], str(tmp_path / "file"), *argv[5:]]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_resume_says_which_flags_it_ignores(fer_csv, tmp_path, capsys):
    _run(fer_csv, tmp_path / "run", epochs=1)
    argv = ["train", "--data", str(fer_csv), "--out", str(tmp_path / "run"), "--device", "cpu", "--resume"]
    assert cli_main([*argv, "--epochs", "1", "--lr", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "these flags are ignored: --lr 0.5 (keeps 0.001)" in out and "--epochs" not in out.split("ignored")[1]


def test_splits_without_rows_are_refused_before_an_epoch(tmp_path, capsys):
    from conftest import synthetic_rows, write_csv

    data = write_csv(tmp_path / "no_public.csv", synthetic_rows({"Training": 16, "PrivateTest": 8}))
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "no PublicTest rows" in capsys.readouterr().err
    assert not (tmp_path / "o" / "last.pth").exists()


def test_unwritable_out_and_orphan_temporary_files(fer_csv, tmp_path, capsys):
    import os

    (tmp_path / "run").mkdir()
    orphan = tmp_path / "run" / "last.pth12345.tmp"  # what a kill during a checkpoint write leaves
    orphan.write_bytes(b"\0" * 1000)
    _run(fer_csv, tmp_path / "run", epochs=1)
    assert not orphan.exists()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        argv = ["train", "--data", str(fer_csv), "--out", str(locked / "run"), "--epochs", "1", "--device", "cpu"]
        assert cli_main(argv) == 2 and "Permission denied" in capsys.readouterr().err
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    argv = ["train", "--data", str(fer_csv), "--out", str(blocker / "run"), "--epochs", "1", "--device", "cpu"]
    assert cli_main(argv) == 2 and "error:" in capsys.readouterr().err


def test_the_fast_recipe_is_what_trained_the_bundled_models():
    import dataclasses

    # r4 of reports/wild, the first `fast`; today's `fast` is this recipe with r4 as its teacher (fastkd)
    r4 = resolve_config("cpu", label_smoothing=0.3, smoothing_prior="ferplus", photometric=0.1)
    assert resolve_config("fast") == dataclasses.replace(r4, recipe="fast")
