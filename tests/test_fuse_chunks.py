"""The behaviour-agreement weights gather item pairs in chunks (memory at MicroLens-1M size): the chunked
row-wise cosines must equal the one-shot gather exactly, for chunk boundaries inside and at the end."""

import numpy as np

from recstack.embed.fuse import _pair_cosines


def test_pair_cosines_chunked_equal_one_shot():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(50, 7)).astype(np.float32)
    left, right = rng.integers(0, 50, 1000), rng.integers(0, 50, 1000)
    one_shot = (b[left] * b[right]).sum(1)
    for chunk in (1, 7, 999, 1000, 4096):
        got = _pair_cosines(b, left, right, chunk=chunk)
        assert got.dtype == one_shot.dtype
        np.testing.assert_array_equal(got, one_shot)
