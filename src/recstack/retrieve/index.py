"""One search interface over item vectors: `VectorIndex(vectors, ...).search(queries, k) -> (scores, ids)`.

Cosine similarity as inner product on L2-normalised vectors. The index is any FAISS `index_factory` string
(`Flat`, `IVF{n},Flat`, `HNSW{m}`, `IVF{n},PQ{m}`, ...); `nprobe` / `efSearch` are settings, not part of the
string. Backends, chosen once and never branched on by callers (STYLE.md section 7):
  - `faiss`: the CPU index; on CUDA the FAISS GPU index when the installed FAISS has GPU support
    (`faiss.get_num_gpus() > 0`; HNSW has no GPU version and stays on the CPU);
  - `torch`: exact matmul + top-k, used on CUDA when FAISS has no GPU support (faster than CPU FAISS there)
    and as the reference the tests compare FAISS against.
Trained indexes (IVF, PQ, HNSW graphs) are cached on disk by (vectors fingerprint, factory string).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from recstack.artifacts import atomic_path
from recstack.config import RetrieveIndexConfig
from recstack.device import resolve_device
from recstack.errors import DataError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "faiss", "torch")
QUERY_CHUNK = 4096  # queries per torch matmul: bounds the (chunk, n) score block


@dataclass(frozen=True)
class IndexSettings:
    """A resolved index choice (retrieve/sources.index_settings turns `factory: auto` into one); the search
    defaults are the schema's (config.RetrieveIndexConfig), not numbers of their own."""

    factory: str = "Flat"
    nprobe: int = RetrieveIndexConfig.nprobe  # IVF lists visited per query
    ef_search: int = RetrieveIndexConfig.ef_search  # HNSW candidate list per query
    backend: str = RetrieveIndexConfig.backend  # auto | faiss | torch
    device: str = "auto"  # auto | cpu | cuda


def normalise(x: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    """(n, d) float32, rows of unit length (zero rows stay zero); NaN / inf / wrong width are errors."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{what}: shape {x.shape} dtype {x.dtype}; expected a 2-D float matrix (rows, dim)")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{what}: width {x.shape[1]}; expected {dim} (the index's vector width)")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(f"{what}: row {row} dimension {col} is {float(x[row, col])}; expected finite values")
    x = np.ascontiguousarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def fingerprint(x: np.ndarray) -> str:
    h = hashlib.sha256(f"{x.shape}{x.dtype}".encode())
    h.update(np.ascontiguousarray(x).view(np.uint8).reshape(-1))
    return h.hexdigest()[:16]


def torch_search(vectors: torch.Tensor, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: vectors (n, d) on the device, queries (q, d) -> (q, k) scores, rows."""
    scores, rows = [], []
    for s in range(0, len(queries), QUERY_CHUNK):
        q = torch.from_numpy(queries[s : s + QUERY_CHUNK]).to(vectors.device)  # (c, d)
        top = torch.topk(q @ vectors.T, k, dim=1)  # (c, n) -> (c, k)
        scores.append(top.values.cpu().numpy())
        rows.append(top.indices.cpu().numpy())
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(scores), np.concatenate(rows).astype(np.int64)


class VectorIndex:
    """Search `vectors` (n, d) by cosine; `ids` (n,) maps index rows to the caller's ids (default: rows)."""

    def __init__(
        self,
        vectors: np.ndarray,
        settings: IndexSettings = IndexSettings(),
        ids: np.ndarray | None = None,
        cache_dir: str | Path | None = None,
        what: str = "item vectors",
        seed: int = 2025,
    ):
        if settings.backend not in BACKENDS:
            raise DataError(f"retrieve.index.backend is {settings.backend!r}; expected one of {BACKENDS}")
        self.vectors = normalise(vectors, what)
        self.n, self.dim = self.vectors.shape
        if self.n == 0:
            raise DataError(f"{what}: no vectors to index")
        self.ids = np.arange(self.n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if len(self.ids) != self.n:
            raise DataError(f"{what}: {self.n} vectors but {len(self.ids)} ids")
        self.settings = settings
        device = resolve_device(settings.device)
        gpu_faiss = device.type == "cuda" and faiss.get_num_gpus() > 0
        use_torch = settings.backend == "torch" or (
            settings.backend == "auto" and device.type == "cuda" and not gpu_faiss
        )
        self.backend = "torch" if use_torch else ("faiss-gpu" if gpu_faiss else "faiss")
        if use_torch:
            self._torch = torch.from_numpy(self.vectors).to(device)
            return
        index = self._build(cache_dir, seed, what)
        if gpu_faiss and "HNSW" not in settings.factory:
            index = faiss.index_cpu_to_all_gpus(index)  # pragma: no cover (needs a GPU build of FAISS)
        else:
            self.backend = "faiss"
        self._set_params(index)
        self._faiss = index

    def _build(self, cache_dir: str | Path | None, seed: int, what: str) -> faiss.Index:
        factory = self.settings.factory
        cache = None
        if cache_dir is not None:
            key = hashlib.sha256(f"{fingerprint(self.vectors)}|{factory}|{seed}".encode()).hexdigest()[:20]
            cache = Path(cache_dir) / f"{key}.faiss"
            if cache.is_file():
                log.info("index %s: loaded from the cache %s", factory, cache)
                return faiss.read_index(str(cache))
        try:
            index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            raise DataError(
                f"retrieve.index.factory {factory!r} is not a FAISS index_factory string for {self.dim}-d "
                f"vectors (e.g. Flat, IVF1024,Flat, HNSW32, IVF1024,PQ16): {first}"
            ) from None
        if not index.is_trained:
            if hasattr(faiss, "ParameterSpace"):
                faiss.ParameterSpace().set_index_parameter(index, "verbose", 0)
            try:
                index.train(self._train_sample(index, seed))
            except RuntimeError as e:
                raise DataError(
                    f"retrieve.index.factory {factory!r} cannot be trained on {self.n} {what}: "
                    f"{str(e).strip().splitlines()[-1]} (use fewer IVF lists or Flat for small sets)"
                ) from None
        index.add(self.vectors)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                faiss.write_index(index, str(tmp))
        return index

    def _train_sample(self, index: faiss.Index, seed: int) -> np.ndarray:
        """At most 256 points per IVF list (FAISS's own cap) so training stays seconds at millions of items."""
        nlist = getattr(faiss.extract_index_ivf(index), "nlist", 0) if "IVF" in self.settings.factory else 0
        cap = max(256 * max(nlist, 1), 65_536)
        if self.n <= cap:
            return self.vectors
        keep = np.sort(np.random.default_rng(seed).choice(self.n, cap, replace=False))
        return self.vectors[keep]

    def _set_params(self, index: faiss.Index) -> None:
        if "IVF" in self.settings.factory:
            faiss.extract_index_ivf(index).nprobe = int(self.settings.nprobe)
        if "HNSW" in self.settings.factory:
            hnsw = faiss.downcast_index(index)
            if hasattr(hnsw, "hnsw"):
                hnsw.hnsw.efSearch = int(self.settings.ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (q, d) -> (scores (q, k) float32 cosine, ids (q, k) int64), best first."""
        if not 0 < k <= self.n:
            raise DataError(
                f"search: k={k} but the index holds {self.n} vectors; expected 1 <= k <= {self.n}"
            )
        q = normalise(queries, "queries", self.dim)
        if self.backend == "torch":
            scores, rows = torch_search(self._torch, q, k)
        else:
            scores, rows = self._faiss.search(q, k)
        # IVF / HNSW can return fewer than k hits (-1 rows) when nprobe / efSearch are small
        missing = rows < 0
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return scores, np.where(missing, -1, self.ids[np.maximum(rows, 0)])


def set_threads(n: int) -> None:
    """FAISS's OpenMP threads (0 = leave FAISS's default: every core)."""
    if n > 0:
        faiss.omp_set_num_threads(n)
    elif "OMP_NUM_THREADS" in os.environ:
        faiss.omp_set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def search_excluding(
    index: VectorIndex, queries: np.ndarray, k: int, exclude: list[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per query with each query's `exclude` ids left out (the seen-item filter); rows with fewer
    than k hits left are padded with id -1 and score -inf."""
    if exclude is None:
        return index.search(queries, k)
    extra = max((len(e) for e in exclude), default=0)
    scores, ids = index.search(queries, min(index.n, k + extra))
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for r, ex in enumerate(exclude):
        keep = ids[r] >= 0
        if len(ex):
            keep &= ~np.isin(ids[r], ex)
        row_i, row_s = ids[r][keep][:k], scores[r][keep][:k]
        out_i[r, : len(row_i)], out_s[r, : len(row_s)] = row_i, row_s
    return out_s, out_i
