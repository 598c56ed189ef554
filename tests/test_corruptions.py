"""The robustness benchmark's corruptions: shape, dtype, range, determinism, severity."""

import numpy as np
import pytest

from ferkit.corruptions import CORRUPTIONS, corrupt


def test_every_corruption_keeps_shape_dtype_range_and_is_deterministic():
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    for name in CORRUPTIONS:
        for severity in (1, 3):
            out = corrupt(faces, name, severity, seed=1)
            assert out.shape == faces.shape and out.dtype == np.uint8, name
            assert np.array_equal(out, corrupt(faces, name, severity, seed=1)), name
            assert not np.array_equal(out, faces), name
        mild, harsh = (np.abs(corrupt(faces, name, s, seed=1).astype(int) - faces).mean() for s in (1, 3))
        assert harsh > mild, name
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(faces, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(faces, "jpeg", 4)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(faces.astype(float), "jpeg", 1)
