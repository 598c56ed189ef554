import torch

from ferkit.train.augment import augment_batch, augment_sample


def _images():
    return torch.rand(16, 1, 48, 48, generator=torch.Generator().manual_seed(0))


def test_shape_dtype_range():
    out = augment_batch(_images(), torch.Generator().manual_seed(1))
    assert out.shape == (16, 1, 48, 48) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert augment_sample(_images()[0]).shape == (1, 48, 48)


def test_deterministic_under_seed():
    a = augment_batch(_images(), torch.Generator().manual_seed(5))
    b = augment_batch(_images(), torch.Generator().manual_seed(5))
    c = augment_batch(_images(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_augmentation_is_identity_and_flip_mirrors():
    x = _images()
    same = augment_batch(x, torch.Generator().manual_seed(0), flip=0.0, rotation=0.0, min_crop=1.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    mirrored = augment_batch(x, torch.Generator().manual_seed(0), flip=1.0, rotation=0.0, min_crop=1.0)
    torch.testing.assert_close(mirrored, x.flip(-1), atol=1e-5, rtol=0)


def test_augmentation_changes_images():
    x = _images()
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert (out - x).abs().mean() > 0.05


def test_erasing_and_mixing_are_deterministic_and_bounded():
    import numpy as np

    from ferkit.train.augment import mix_batch, random_erasing

    x = _images()
    a = random_erasing(x, 1.0, torch.Generator().manual_seed(2))
    b = random_erasing(x, 1.0, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert ((a != x).flatten(1).any(1)).all()  # p=1: every image has an erased box
    assert torch.equal(random_erasing(x, 0.0, torch.Generator().manual_seed(2)), x)
    y = torch.arange(16) % 4
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        m1 = mix_batch(x, y, np.random.default_rng(0), mixup, cutmix, torch.Generator().manual_seed(3))
        m2 = mix_batch(x, y, np.random.default_rng(0), mixup, cutmix, torch.Generator().manual_seed(3))
        assert torch.equal(m1[0], m2[0]) and torch.equal(m1[2], m2[2]) and m1[3] == m2[3]
        assert m1[0].shape == x.shape and 0 <= m1[0].min() and m1[0].max() <= 1 and 0 <= m1[3] <= 1
        assert torch.equal(m1[1], y) and sorted(m1[2].tolist()) == sorted(y.tolist())


def test_shift_moves_the_image():
    x = torch.zeros(1, 1, 48, 48)
    x[..., 20:28, 20:28] = 1
    out = augment_batch(x, torch.Generator().manual_seed(0), flip=0, rotation=0, min_crop=1.0, shift=0.2)
    assert out.shape == x.shape and not torch.allclose(out, x, atol=1e-3)


def test_photometric_effects_keep_shape_dtype_range_and_are_deterministic():
    from ferkit.train import augment

    x = _images()
    zero, full = torch.zeros(16), torch.ones(16)
    for effect in (augment.brightness, augment.contrast, augment.gamma, augment.blur, augment.low_resolution):
        strong = effect(x, 0.5 * full)
        assert strong.shape == x.shape and strong.dtype == x.dtype and 0 <= strong.min() and strong.max() <= 1
        assert (strong - x).abs().mean() > 0.01, effect.__name__
        torch.testing.assert_close(effect(x, zero), x, atol=1e-4, rtol=0)
    assert augment.brightness(x, full)[x > 0.01].eq(1).all()  # a full-scale brightening saturates
    a = augment.photometric_batch(x, 0.5, torch.Generator().manual_seed(4))
    b = augment.photometric_batch(x, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1 and not torch.equal(a, x)
    off = augment.photometric_batch(x, 0.0, torch.Generator().manual_seed(4))
    torch.testing.assert_close(off, x, atol=1e-4, rtol=0)
