"""Modalities -> one item matrix: per-modality L2 norm and weight, concatenation, PCA to `dim`.

A modality is any (N, D) matrix with a mask of the rows that have a vector: our text or image encoder's
output, or an embedding the track provides (mmctr txt_emb_BERT / img_emb_CLIPRN50 / item_emb_d128,
tencentgr emb_81 ... emb_86 with partial coverage). Reference points: the MMCTR baseline concatenated BERT
and CLIP and reduced with PCA to 128; the Task 1 winner L2-normalised before the PCA.

Missing rows are explicit: each block is L2-normalised, centred on the rows that have it and scaled to unit
mean squared norm; a row without the modality gets the block mean (zero after centring), so it adds
nothing to the PCA and is not pulled towards the origin as a zero vector would be.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from recstack.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Modality:
    name: str
    matrix: np.ndarray  # (N, D) float32, row-aligned with the items
    mask: np.ndarray  # (N,) bool: rows that have a vector
    source: str = "provided"  # "provided" or the encoder checkpoint
    weight: float = 1.0

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


@dataclass
class Fused:
    matrix: np.ndarray  # (N, dim) float32; rows without any modality (and excluded rows) are zeros
    features: np.ndarray  # (N, F) float32 balanced concatenation the PCA was fitted on
    components: np.ndarray  # (F, dim) float32 projection: matrix = (features - mean) @ components
    mean: np.ndarray  # (F,) float32
    rows: np.ndarray  # (N,) bool: rows the PCA was fitted on and that got a vector
    figures: dict[str, Any] = field(default_factory=dict)


def provided_modality(
    name: str, vectors: np.ndarray | Sequence[Any], n_rows: int, mask: np.ndarray | None = None, **kw: Any
) -> Modality:
    """A provided embedding as a modality. `vectors` is an (N, D) matrix, or a list of per-row vectors
    (None where the row has none) whose lengths are checked: a wrong length names the row and column."""
    keys = kw.get("keys")  # optional item ids for messages (e.g. creative ids)
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        if len(vectors) != n_rows:
            raise DataError(f"embedding '{name}' has {len(vectors)} rows; expected {n_rows} (one per item)")
        matrix = vectors.astype(np.float32, copy=False)
        has = np.ones(n_rows, bool) if mask is None else np.asarray(mask, bool)
    else:
        if len(vectors) != n_rows:
            raise DataError(
                f"embedding '{name}' has {len(vectors)} entries; expected {n_rows} (one per item)"
            )
        has = np.array([v is not None for v in vectors], bool)
        if mask is not None:
            has &= np.asarray(mask, bool)
        lengths = np.array([len(v) if v is not None else -1 for v in vectors])
        dim = int(kw.get("dim") or (lengths[has][0] if has.any() else 0))
        bad = np.flatnonzero(has & (lengths != dim))
        if len(bad):
            r = int(bad[0])
            who = f"item {keys[r]!r}" if keys is not None else f"item at row {r}"
            raise DataError(f"embedding column '{name}': {who} has {lengths[r]} values; expected {dim}")
        matrix = np.zeros((n_rows, dim), np.float32)
        if has.any():
            matrix[has] = np.asarray([vectors[i] for i in np.flatnonzero(has)], np.float32)
    finite = np.isfinite(matrix).all(1)
    if not finite[has].all():
        r = int(np.flatnonzero(has & ~finite)[0])
        who = f"item {keys[r]!r}" if keys is not None else f"item at row {r}"
        raise DataError(f"embedding column '{name}': {who} has a NaN or infinite value")
    return Modality(name, matrix, has & (np.abs(matrix).sum(1) > 0))  # an all-zero vector is no vector


def balance_stats(m: Modality, rows: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The block's centre and scale over its present `rows` (after L2 norm); None with fewer than 2 rows."""
    present = m.mask & rows
    if present.sum() < 2:
        return None
    x = m.matrix[present].astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    mu = x.mean(0)
    return mu, max(float(np.sqrt(((x - mu) ** 2).sum(1).mean())), 1e-12)


def balanced(v: np.ndarray, mu: np.ndarray, scale: float, weight: float) -> np.ndarray:
    """Rows of one block in the balanced space: L2 norm, minus the centre, over the scale, times the weight."""
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return ((v - mu) * (weight / scale)).astype(np.float32)


def balance(m: Modality, rows: np.ndarray) -> np.ndarray:
    """(N, D): L2-normalised, centred on the present `rows`, unit mean squared norm, times the weight.

    Rows without the modality get the block mean, i.e. zero after centring: no pull on the PCA.
    """
    out = np.zeros(m.matrix.shape, np.float32)
    stats = balance_stats(m, rows)
    if stats is not None:
        present = m.mask & rows
        out[present] = balanced(m.matrix[present], *stats, m.weight)
    return out


def _pair_cosines(b: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(P,) row-wise dot products of b[left] and b[right], gathered in chunks: at MicroLens-1M size the
    full gathers were 2 x (3.6M pairs x width) floats, over 14 GiB
    (bench/README.md "Per-stage scale: TencentGR-1M and MicroLens-1M")."""
    out = np.empty(len(left), b.dtype)
    for s in range(0, len(left), chunk):
        out[s : s + chunk] = (b[left[s : s + chunk]] * b[right[s : s + chunk]]).sum(1)
    return out


def behaviour_weights(modalities: list[Modality], pairs: np.ndarray, rows: np.ndarray, seed: int = 0) -> dict:
    """Weight each modality by how much it agrees with behaviour: sqrt of (mean cosine of consecutive train
    pairs - mean cosine of shuffled pairs), in the balanced space, scaled so the best modality gets 1.

    A modality that does not place co-engaged items closer than random ones gets a weight near 0 instead of
    diluting the others (synthetic, kNN HR@10 of the fused matrix: equal weights 0.0256, these 0.0296).
    """
    rng = np.random.default_rng(seed)
    shuffled = np.c_[pairs[:, 0], rng.permutation(pairs[:, 1])]
    agreement = {}
    for m in modalities:
        b = balance(Modality(m.name, m.matrix, m.mask), rows)
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        both = m.mask[pairs[:, 0]] & m.mask[pairs[:, 1]] & m.mask[shuffled[:, 1]]
        if both.sum() < 10:
            agreement[m.name] = 0.0
            continue
        pos = _pair_cosines(b, pairs[both, 0], pairs[both, 1]).mean()
        rnd = _pair_cosines(b, shuffled[both, 0], shuffled[both, 1]).mean()
        agreement[m.name] = max(float(pos - rnd), 0.0)
    top = max(agreement.values(), default=0.0)
    if top <= 0:
        return {m.name: 1.0 for m in modalities}
    return {k: round(float(np.sqrt(v / top)), 4) for k, v in agreement.items()}


def fuse(
    modalities: list[Modality],
    dim: int = 128,
    whiten: bool = False,
    rows: np.ndarray | None = None,
    seed: int = 0,
) -> Fused:
    """Concatenate the balanced modalities and reduce with PCA fitted on `rows` (default: all rows that have
    any modality). Rows outside `rows` or without any modality come out as zeros. If fewer than `dim`
    components exist (small data, narrow inputs), the remaining columns are zeros and the log says so."""
    if not modalities:
        raise DataError("embed: no modality to fuse (enable the text encoder or list provided embeddings)")
    n = len(modalities[0].matrix)
    rows = np.ones(n, bool) if rows is None else np.asarray(rows, bool)
    any_mod = np.zeros(n, bool)
    for m in modalities:
        any_mod |= m.mask
    fit = rows & any_mod
    features = np.concatenate([balance(m, rows) for m in modalities], 1)  # (N, F)
    k = min(dim, int(fit.sum()) - 1, features.shape[1])
    if k < 1:
        raise DataError(f"embed: {int(fit.sum())} items with a vector; too few to fit a PCA")
    pca = PCA(n_components=k, whiten=whiten, random_state=seed, svd_solver="auto")
    pca.fit(features[fit])
    components = np.zeros((features.shape[1], dim), np.float32)
    components[:, :k] = pca.components_.T
    if whiten:
        components[:, :k] /= np.sqrt(pca.explained_variance_)[None, :]
    mean = pca.mean_.astype(np.float32)
    out = np.zeros((n, dim), np.float32)
    out[fit] = (features[fit] - mean) @ components
    if k < dim:
        log.info(
            "PCA: only %d components exist (items / feature width); columns %d..%d are zeros", k, k, dim - 1
        )
    figures = {
        "dim": dim,
        "pca_components": k,
        "whiten": whiten,
        "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
        "input_width": int(features.shape[1]),
        "coverage_any": round(float(fit.sum() / max(rows.sum(), 1)), 4),
        "modalities": {
            m.name: {
                "dim": m.dim,
                "source": m.source,
                "weight": m.weight,
                "coverage": round(float((m.mask & rows).sum() / max(rows.sum(), 1)), 4),
            }
            for m in modalities
        },
    }
    return Fused(out, features, components, mean, fit, figures)
