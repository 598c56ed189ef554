"""The training engine's options: every recipe and option trains on CPU; resume; DDP with gloo."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import train_interrupted

from ferkit.calibration import calibrate_model
from ferkit.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ferkit.device import native_bf16
from ferkit.evaluation import evaluate_checkpoint
from ferkit.model import create_model
from ferkit.train import BEST_CHECKPOINT, LAST_CHECKPOINT, RECIPES, parts, resolve_config, train
from ferkit.train import loop as train_module


def _cfg(fer_csv, out, recipe="seed", **overrides):
    settings = {"data": str(fer_csv), "out": str(out), "epochs": 1, "device": "cpu", "batch_size": 32, **overrides}
    return resolve_config(recipe, **settings)


# the GPU recipes take 11-14 s each on 2 cores: slow, run by CI
@pytest.mark.parametrize("recipe", [pytest.param(r, marks=pytest.mark.slow) if r in ("accurate", "best") else r
                                    for r in sorted(RECIPES)])
def test_every_recipe_runs_a_tiny_epoch(fer_csv, tmp_path, recipe):
    record = train(_cfg(fer_csv, tmp_path / recipe, recipe))
    assert record["config"]["recipe"] == recipe and 0 <= record["accuracy"] <= 1
    ran_bf16 = RECIPES[recipe].get("precision") == "bf16" or native_bf16(torch.device("cpu"))
    assert record["config"]["precision"] == ("bf16" if ran_bf16 else "fp32")  # what ran, never "auto"


@pytest.mark.slow  # over 10 s on 2 cores: CI runs it (pytest -m 'slow or not slow')
def test_every_option_trains(fer_csv, tmp_path):
    options = dict(optimizer="sgd", lr=0.05, weight_decay=5e-4, schedule="cosine", warmup_epochs=0.5,
                   label_smoothing=0.1, class_weights=True, sampler="balanced", shift=0.1, erasing=0.5,
                   mixup=0.2, cutmix=1.0, ema=0.9, tta="tencrop", stem="cifar", epochs=2, early_stopping=1,
                   fine_labels=True)
    record = train(_cfg(fer_csv, tmp_path / "all", **options))
    assert record["config"]["tta"] == "tencrop" and record["best_epoch"] >= 1
    best = load_checkpoint(tmp_path / "all" / BEST_CHECKPOINT)  # 7 fine outputs, merged into the 4 classes
    assert best["model_config"]["fine_to_class"] == [0, 0, 1, 2, 1, 3, 3]
    assert best["model_state_dict"]["fc.weight"].shape == (7, 512) and len(best["class_names"]) == 4
    record = train(_cfg(fer_csv, tmp_path / "focal", loss="focal", optimizer="adamw", schedule="onecycle",
                        tta="flip", classes=7))
    assert len(record["class_names"]) == 7


def test_checkpoint_chosen_with_val_tta_and_scored_with_tta(fer_csv, tmp_path, monkeypatch):
    scored_with = []
    real_predict = train_module.predict_logits

    def spy(model, images, batch_size, device, tta, bf16):
        scored_with.append(tta)
        return real_predict(model, images, batch_size, device, tta, bf16)

    monkeypatch.setattr(train_module, "predict_logits", spy)
    record = train(_cfg(fer_csv, tmp_path / "run", epochs=2, tta="tencrop", val_tta="flip"))
    # two epochs chosen between with flip; the chosen checkpoint calibrated on PublicTest with the views
    # EmotionPredictor averages by default (calibration.fit_view_temperature), then scored on PublicTest and
    # PrivateTest with ten-crop
    assert scored_with == ["flip", "flip", "tencrop", "tencrop"]
    best = tmp_path / "run" / BEST_CHECKPOINT
    public = evaluate_checkpoint(best, fer_csv, split="PublicTest", device="cpu")
    assert public["tta"] == "tencrop" and record["tta"] == "tencrop"
    assert record["public_test_accuracy"] == public["accuracy"]
    # the stored temperature is the one `ferkit calibrate` fits for those views, not for one view
    fitted, _ = calibrate_model(best, fer_csv, tmp_path / "again.pth")
    assert load_checkpoint(best)["temperature"] == pytest.approx(fitted, abs=2e-4)
    assert calibrate_model(best, fer_csv, tmp_path / "one.pth", tta="none")[0] != pytest.approx(fitted, abs=2e-4)


@pytest.mark.slow  # over 10 s on 2 cores: CI runs it (pytest -m 'slow or not slow')
def test_resume_matches_an_uninterrupted_run(fer_csv, tmp_path, monkeypatch):
    options = dict(epochs=3, ema=0.9, mixup=0.2, erasing=0.3, schedule="cosine")
    train(_cfg(fer_csv, tmp_path / "whole", **options))

    train_interrupted(_cfg(fer_csv, tmp_path / "split", **options), monkeypatch, epoch=3)
    assert load_checkpoint(tmp_path / "split" / LAST_CHECKPOINT)["epoch"] == 2
    # a run saved before --fine-labels existed resumes as it ran (without it), whatever --recipe says
    last = torch.load(tmp_path / "split" / LAST_CHECKPOINT, weights_only=True)
    del last["config"]["fine_labels"]
    torch.save(last, tmp_path / "split" / LAST_CHECKPOINT)
    # resume with only the run flags: the recipe comes from last.pth
    record = train(resolve_config("cpu", data=str(fer_csv), out=str(tmp_path / "split"), device="cpu",
                                  resume=True))

    whole = load_checkpoint(tmp_path / "whole" / LAST_CHECKPOINT)["model_state_dict"]
    split = load_checkpoint(tmp_path / "split" / LAST_CHECKPOINT)["model_state_dict"]
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    assert record["accuracy"] == json.loads((tmp_path / "whole" / "metrics.json").read_text())["accuracy"]
    history = json.loads((tmp_path / "split" / "history.json").read_text())
    assert len(history["train_loss"]) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # over 10 s on 2 cores: CI runs it (pytest -m 'slow or not slow')
def test_ddp_two_cpu_processes_stay_in_sync(fer_csv, tmp_path):
    """torchrun's environment, two gloo processes: each saves its final weights; they must agree."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch
        from ferkit.train import loop as t
        saved = {{}}
        real = t.train_one_epoch
        def spy(parts, *args, **kwargs):
            result = real(parts, *args, **kwargs)
            saved["state"] = {{k: v.clone() for k, v in parts.model.state_dict().items()}}
            return result
        t.train_one_epoch = spy
        from ferkit.train import resolve_config
        cfg = resolve_config("seed", data={str(fer_csv)!r}, out={str(tmp_path / "ddp")!r}, epochs=2,
                               batch_size=32, device="cpu", ema=0.9)
        t.train(cfg)
        torch.save(saved["state"], {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    params = [k for k in a if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(a[k], b[k]) for k in params)  # gradients were averaged every step
    assert "x 2 processes (16 images each per step)" in outputs[0]
    assert (tmp_path / "ddp" / BEST_CHECKPOINT).is_file() and (tmp_path / "ddp" / "metrics.json").is_file()
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2


def test_ema_is_torchs_average_without_its_host_syncs():
    """train.EMA averages exactly as AveragedModel + get_ema_multi_avg_fn, with the same state_dict keys,
    so last.pth files saved by either resume with the other."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from ferkit.model import create_model

    torch.manual_seed(0)
    model = create_model(4)
    ours = parts.EMA(model, 0.9)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        model(torch.rand(4, 1, 48, 48)).sum().backward()  # train mode: batch norm's running stats move too
        optimizer.step()
        ours.update_parameters(model)
        theirs.update_parameters(model)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and int(a["n_averaged"]) == 3
    floats = [k for k in a if a[k].is_floating_point()]
    assert len(floats) > 100 and all(torch.equal(a[k], b[k]) for k in floats)
    assert not torch.equal(a["module.fc.weight"], model.state_dict()["fc.weight"])  # an average, not a copy
    resumed = parts.EMA(create_model(4), 0.9)
    resumed.load_state_dict(b)
    assert int(resumed.n_averaged) == 3 and torch.equal(resumed.module.fc.bias, theirs.module.fc.bias)


def test_weighted_smoothed_cross_entropy_is_torchs():
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(64, 7, generator=gen), torch.randint(0, 7, (64,), generator=gen)
    weight = torch.rand(7, generator=gen) + 0.5
    ours = parts.weighted_smoothed_cross_entropy(logits, target, weight, 0.1)
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1))
    cfg = resolve_config("seed", class_weights=True, label_smoothing=0.1, classes=7)
    assert parts.make_loss(cfg, target).func is parts.weighted_smoothed_cross_entropy


def test_init_starts_from_a_models_weights_and_refuses_another_network(fer_csv, tmp_path):
    torch.manual_seed(1)  # not the run's seed (0): without --init, its weights would be others
    source = tmp_path / "source.pth"
    save_atomic(make_checkpoint(create_model(4), epoch=0, val_accuracy=0.0, config={}), source)
    # a learning rate too small to move a weight: what is saved is what it started from
    train(_cfg(fer_csv, tmp_path / "warm", init=str(source), lr=1e-30))
    warm = load_checkpoint(tmp_path / "warm" / BEST_CHECKPOINT)
    assert torch.equal(warm["model_state_dict"]["conv1.weight"], load_checkpoint(source)["model_state_dict"]
                       ["conv1.weight"])
    assert warm["config"]["init"] == str(source)
    for init, says in ((str(source), "is not the run's"), (str(tmp_path / "none.pth"), "not found"),
                       (str(fer_csv), "not a readable PyTorch checkpoint"), ("accurate", "does not ship")):
        with pytest.raises(ValueError, match=rf"--init {init}: .*{says}"):
            parts.build_training(_cfg(fer_csv, tmp_path / "x", init=init, classes=7), torch.device("cpu"),
                                 torch.zeros(4, dtype=torch.long), 1)


def test_keep_last_keeps_the_last_epoch_where_best_keeps_the_best(fer_csv, tmp_path, monkeypatch):
    real_score = train_module._score
    for keep, kept_epoch in (("best", 1), ("last", 2)):
        falling = iter([0.9, 0.8])  # each epoch's PublicTest accuracy worse than the one before

        def score(*args, falling=falling):  # then PrivateTest's, as it is
            loss, accuracy, logits = real_score(*args)
            return loss, next(falling, accuracy), logits

        monkeypatch.setattr(train_module, "_score", score)
        record = train(_cfg(fer_csv, tmp_path / keep, epochs=2, keep=keep))
        assert record["best_epoch"] == kept_epoch
        assert load_checkpoint(tmp_path / keep / BEST_CHECKPOINT)["epoch"] == kept_epoch
    with pytest.raises(ValueError, match="--keep last .* --early-stopping"):
        train(_cfg(fer_csv, tmp_path / "stop", keep="last", early_stopping=2))


def test_cpu_training_runs_channels_last_and_learns_what_contiguous_learns(fer_csv, tmp_path):
    import numpy as np

    device, labels = torch.device("cpu"), torch.tensor([0, 1, 2, 3] * 4)
    x = torch.rand(16, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    losses, weights = {}, {}
    for layout in ("auto", "contiguous"):
        cfg = _cfg(fer_csv, tmp_path / layout, layout=layout, precision="fp32", ema=0.0)
        torch.manual_seed(0)
        built = parts.build_training(cfg, device, labels, 2)
        conv = built.model.layer1[0].conv1.weight  # conv1 has one input channel: both layouts at once
        assert conv.is_contiguous(memory_format=torch.channels_last) is (layout == "auto")
        losses[layout], _ = train_module.train_one_epoch(built, iter([(x, labels), (x.flip(-1), labels)]), 2, cfg,
                                                         np.random.default_rng(0), torch.Generator(), device)
        weights[layout] = {k: v.detach().clone() for k, v in built.model.named_parameters()}
    torch.testing.assert_close(losses["auto"], losses["contiguous"], rtol=1e-3, atol=0)
    # Adam's first steps move a weight by about lr whatever its gradient's size: where a gradient is
    # near 0, float rounding may flip its sign, so two steps agree to 2 * 2 lr, not to rounding
    for name, value in weights["auto"].items():
        torch.testing.assert_close(value, weights["contiguous"][name], atol=4 * cfg.lr, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_emulated_bf16_is_named_before_it_runs(fer_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "native_bf16", lambda device: False)
    record = train(_cfg(fer_csv, tmp_path / "bf16", precision="bf16"))
    assert "without bf16 arithmetic is emulated" in capsys.readouterr().out and record["config"]["precision"] == "bf16"
    train(_cfg(fer_csv, tmp_path / "auto", precision="auto", overwrite=True))
    assert "without bf16 arithmetic" not in capsys.readouterr().out
