"""The search interface: FAISS indexes against exact brute force, the torch fallback, the cache, errors."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.errors import DataError
from recstack.retrieve.index import IndexSettings, VectorIndex, search_excluding


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(16, d))
    return (centres[rng.integers(0, 16, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def brute(v: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ vn.T), axis=1, kind="stable")[:, :k]


def test_flat_and_torch_equal_brute_force():
    v, q = clustered(3000, 24), clustered(50, 24, seed=1)
    want = brute(v, q, 10)
    s_f, i_f = VectorIndex(v).search(q, 10)
    s_t, i_t = VectorIndex(v, IndexSettings(backend="torch")).search(q, 10)
    assert (i_f == want).mean() > 0.99 and (i_t == want).mean() > 0.99  # ties may swap
    np.testing.assert_allclose(s_f, s_t, atol=1e-5)
    assert np.all(np.diff(s_f, axis=1) <= 1e-6)  # best first


def test_ann_indexes_recall_and_ids_mapping(tmp_path):
    v, q = clustered(4000, 32), clustered(40, 32, seed=2)
    want = brute(v, q, 20)
    ids = np.arange(len(v)) * 10 + 7
    for factory, kw in (("IVF32,Flat", {"nprobe": 32}), ("HNSW16", {"ef_search": 200})):
        idx = VectorIndex(v, IndexSettings(factory, **kw), ids=ids, cache_dir=tmp_path)
        _, got = idx.search(q, 20)
        recall = np.mean([len(set(g) & set(ids[w])) / 20 for g, w in zip(got, want, strict=True)])
        assert recall > 0.95, (factory, recall)
    assert len(list(tmp_path.glob("*.faiss"))) == 2  # trained indexes cached by (vectors, factory)
    again = VectorIndex(v, IndexSettings("IVF32,Flat", nprobe=32), ids=ids, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.faiss"))) == 2
    assert again.search(q, 5)[1].shape == (40, 5)


def test_search_excluding_drops_seen_ids():
    v, q = clustered(500, 8), clustered(3, 8, seed=3)
    idx = VectorIndex(v)
    _, full = idx.search(q, 10)
    seen = [full[0, :3], np.zeros(0, np.int64), full[2, [1, 4]]]
    _, got = search_excluding(idx, q, 5, seen)
    assert got[0].tolist() == full[0, 3:8].tolist()
    assert got[1].tolist() == full[1, :5].tolist()
    assert got[2].tolist() == [full[2, i] for i in (0, 2, 3, 5, 6)]


def test_bad_input_errors():
    v = clustered(100, 8)
    bad = v.copy()
    bad[7, 3] = np.nan
    with pytest.raises(DataError, match="row 7 dimension 3"):
        VectorIndex(bad)
    with pytest.raises(DataError, match="not a FAISS index_factory"):
        VectorIndex(v, IndexSettings("Bogus42"))
    with pytest.raises(DataError, match="cannot be trained on 100"):
        VectorIndex(v, IndexSettings("IVF4096,Flat"))
    idx = VectorIndex(v)
    with pytest.raises(DataError, match="k=101"):
        idx.search(v[:2], 101)
    with pytest.raises(DataError, match="width 9; expected 8"):
        idx.search(np.ones((2, 9), np.float32), 5)
