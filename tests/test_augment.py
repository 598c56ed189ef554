import torch

from ferkit.augment import augment_batch, augment_sample


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
