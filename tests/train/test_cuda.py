"""The engine on a CUDA GPU: no host sync inside a training step, batched augmentation on the device,
every recipe end to end, resume, and GPU inference. Skipped where no GPU is present (CI, laptops)."""

import itertools

import numpy as np
import pytest
import torch
from conftest import train_interrupted

from ferkit.checkpoint import load_checkpoint
from ferkit.data import load_fer2013
from ferkit.infer.predictor import EmotionPredictor
from ferkit.train import BEST_CHECKPOINT, LAST_CHECKPOINT, RECIPES, loop, resolve_config, train
from ferkit.train import batches as batches_module
from ferkit.train import parts as parts_module
from ferkit.train.augment import augment_batch, mix_batch, random_erasing

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

CUDA = torch.device("cuda")


def _cfg(fer_csv, out, recipe="seed", **overrides):
    settings = {"data": str(fer_csv), "out": str(out), "epochs": 1, "device": "cuda", "batch_size": 32, **overrides}
    return resolve_config(recipe, **settings)


# every option that adds work to the step, on top of each recipe's own
HEAVY_STEP = dict(erasing=0.5, mixup=0.2, cutmix=1.0, ema=0.9, label_smoothing=0.1, class_weights=True)
FOCAL_SGD = dict(loss="focal", optimizer="sgd", schedule="cosine", label_smoothing=0.1, class_weights=True)


@pytest.mark.parametrize("options", [{}, HEAVY_STEP, FOCAL_SGD],
                         ids=["recipe", "heavy", "focal-sgd"])
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_training_step_never_waits_for_the_gpu(fer_csv, tmp_path, recipe, options):
    """Batch gathering, augmentation, forward, loss, backward, optimizer, schedule and EMA all run
    without a host sync: torch's sync debug mode turns any sync into an error."""
    cfg = _cfg(fer_csv, tmp_path, recipe, **options)
    arrays = load_fer2013(fer_csv)
    images, labels = batches_module.split_tensors(arrays, "Training", cfg.label_classes, CUDA)
    parts = parts_module.build_training(cfg, CUDA, labels, 100)  # class weights count labels once, before training
    shuffle, aug = torch.Generator().manual_seed(0), torch.Generator(device=CUDA).manual_seed(1)

    def epoch(check: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batches = batches_module.tensor_batches(images, labels, cfg, shuffle, aug)
        first = next(batches)  # the epoch's shuffle is drawn once, before its steps
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if check else "default")
        try:
            return loop.train_one_epoch(parts, itertools.chain([first], batches), 3, cfg,
                                             np.random.default_rng(0), aug, CUDA)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    epoch(check=False)  # first use: cuDNN and cuBLAS set themselves up
    loss, accuracy = epoch(check=True)
    assert loss.is_cuda and torch.isfinite(loss) and 0 <= accuracy.item() <= 1


def test_augmentations_on_the_gpu_keep_shape_dtype_range_and_seed():
    images = torch.rand(64, 1, 48, 48, generator=torch.Generator().manual_seed(0)).to(CUDA)

    def augmented(seed: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator(device=CUDA).manual_seed(seed)
        x = augment_batch(images, gen, flip=0.5, rotation=15, min_crop=0.75, shift=0.1)
        erased = random_erasing(x, 0.5, gen)
        labels = torch.arange(64, device=CUDA) % 4
        mixed, _, _, _ = mix_batch(erased, labels, np.random.default_rng(seed), 0.2, 0.0, gen)
        cut, _, _, _ = mix_batch(erased, labels, np.random.default_rng(seed), 0.0, 1.0, gen)
        return x, erased, mixed, cut

    a, b, c = augmented(1), augmented(1), augmented(2)
    for out in a:
        assert out.is_cuda and out.shape == images.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_trains_on_the_gpu(fer_csv, tmp_path, recipe):
    record = train(_cfg(fer_csv, tmp_path / recipe, recipe, epochs=2))
    assert record["device"].startswith("cuda") and 0 <= record["accuracy"] <= 1
    assert record["config"]["precision"] == "bf16"  # auto on a GPU with bf16 arithmetic, as every recipe is
    best = load_checkpoint(tmp_path / recipe / BEST_CHECKPOINT)  # saved from the GPU, read anywhere
    assert all(t.device.type == "cpu" for t in best["model_state_dict"].values())


def test_compiled_model_trains_on_the_gpu(fer_csv, tmp_path):
    record = train(_cfg(fer_csv, tmp_path, "cpu", compile=True))
    assert record["config"]["compile"] and 0 <= record["accuracy"] <= 1


def test_resume_on_the_gpu_matches_an_uninterrupted_run(fer_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    options = dict(epochs=3, ema=0.9, mixup=0.2, erasing=0.3, schedule="cosine")
    train(_cfg(fer_csv, tmp_path / "whole", **options))

    train_interrupted(_cfg(fer_csv, tmp_path / "split", **options), monkeypatch, epoch=3)
    train(_cfg(fer_csv, tmp_path / "split", **options, resume=True))

    whole = load_checkpoint(tmp_path / "whole" / LAST_CHECKPOINT)["model_state_dict"]
    split = load_checkpoint(tmp_path / "split" / LAST_CHECKPOINT)["model_state_dict"]
    # a resumed run that redrew its shuffle or augmentation would be off by about the lr (1e-3)
    worst = max((whole[k].float() - split[k].float()).abs().max().item() for k in whole)
    assert worst < 1e-5, worst


def test_gpu_inference_agrees_with_the_cpu(random_checkpoint, face_image):
    box = (215, 120, 210, 240)
    on_gpu = EmotionPredictor(random_checkpoint, device="cuda", backend="torch")
    on_cpu = EmotionPredictor(random_checkpoint, device="cpu", backend="torch")
    emotion, index, probs = on_gpu.predict_emotion_from_frame(face_image, box)
    _, _, cpu_probs = on_cpu.predict_emotion_from_frame(face_image, box)
    assert emotion == on_gpu.class_names[index] and index == probs.argmax()
    np.testing.assert_allclose(probs, cpu_probs, atol=5e-3)  # cuDNN runs fp32 convolutions in TF32
