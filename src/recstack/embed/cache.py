"""Encoder outputs cached by (model, settings) and item content, so re-runs encode only new or changed items.

<root>/<namespace>/<shard>.npz holds `keys` (N,) 16-byte content digests and `vectors` (N, D) float32.
The namespace hashes the checkpoint folder (file names, sizes, mtimes) and every setting that changes a
vector (pooling, max length, autocast dtype); a key hashes the item's content (cleaned text, image bytes).
Each call that encodes something adds one shard, written atomically; lookups are vectorised (sorted keys +
searchsorted), so millions of items cost no Python dict.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from recstack.artifacts import atomic_path, file_fingerprint, stable_hash

log = logging.getLogger(__name__)

KEY_BYTES = 16


def content_key(content: str | bytes) -> bytes:
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


def namespace(model_dir: str | Path, settings: dict[str, Any]) -> str:
    return stable_hash({"model": file_fingerprint(model_dir), "settings": settings})


class EmbeddingCache:
    def __init__(self, root: str | Path | None, ns: str):
        self.dir = Path(root) / ns if root is not None else None
        self.keys = np.zeros(0, f"S{KEY_BYTES}")
        self.vectors: np.ndarray | None = None
        if self.dir is not None and self.dir.is_dir():
            shards = [np.load(p) for p in sorted(self.dir.glob("*.npz"))]
            if shards:
                keys = np.concatenate([s["keys"] for s in shards])
                vectors = np.concatenate([s["vectors"] for s in shards])
                keys, first = np.unique(keys, return_index=True)
                self.keys, self.vectors = keys, vectors[first]

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """(hit (N,) bool, vectors (N, D) with zeros where missed, or None when nothing is cached)."""
        q = np.array(keys, f"S{KEY_BYTES}") if keys else np.zeros(0, f"S{KEY_BYTES}")
        if self.vectors is None or len(q) == 0:
            return np.zeros(len(q), bool), None
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        hit = self.keys[pos] == q
        out = np.where(hit[:, None], self.vectors[pos], 0).astype(np.float32)
        return hit, out

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if self.dir is None or not keys:
            return
        with atomic_path(self.dir / f"{uuid.uuid4().hex}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys, f"S{KEY_BYTES}"), vectors=vectors.astype(np.float32))
        log.info("cache: %d new vectors in %s", len(keys), self.dir)
