"""TencentGR (Tencent Advertising Algorithm Challenge 2025, all-modality generative recommendation): the
in-memory dataset that builders produce and writers serialise, and the canonical tables both readers write.

Ids are the platform's re-ids: users and items from 1 (0 = none). Items that appear only in the candidate
pool (never in training, `reid_creative_id` 0 in the parquet release) get ids after the indexer's items, so
every item with a feature or an embedding has a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.artifacts import atomic_path, write_npy, write_table
from recstack.errors import DataError
from recstack.paths import PreparedTGR

USER_SPARSE = ("103", "104", "105", "109")
USER_ARRAY = ("106", "107", "108", "110")
ITEM_SPARSE = ("100", "101", "102", "111", "112", *map(str, range(114, 123)))  # 111 is id-like
ACTIONS = (0, 1, 2)  # exposure, click, conversion (final round)
MM_DIMS = {"81": 32, "82": 1024, "83": 3584, "84": 4096, "85": 3584, "86": 3584}  # 81-83 text, 84-86 image


@dataclass
class TgrEvents:
    """Item events, grouped by user, time-ordered within a user."""

    user: np.ndarray  # (E,) int64 re-id
    item: np.ndarray  # (E,) int64 re-id
    action: np.ndarray  # (E,) int64 in ACTIONS
    ts: np.ndarray  # (E,) int64 unix seconds

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class TgrRaw:
    """A whole TencentGR dataset in memory (what the builders make and the platform writer serialises)."""

    user_raw: np.ndarray  # (U + 1,) object: raw user id of each re-id; [0] = ""
    creative_id: np.ndarray  # (I + 1,) int64: raw creative id of each item re-id; [0] = 0
    item_sparse: dict[str, np.ndarray]  # feature id -> (I + 1,) int64, 0 = missing
    user_sparse: dict[str, np.ndarray]  # feature id -> (U + 1,) int64, 0 = missing
    user_array: dict[str, list[list[int]]]  # feature id -> U + 1 lists ([] = missing)
    events: TgrEvents  # training sequences
    profile_ts: np.ndarray  # (U + 1,) int64 timestamp of each user's profile record
    predict_users: np.ndarray  # (P,) int64 re-ids, in answer order
    predict_events: TgrEvents  # their histories
    cand_creative_id: np.ndarray  # (C,) int64 candidate pool
    cand_features: dict[str, np.ndarray]  # feature id -> (C,) int64 (0 = missing)
    mm: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # feat -> (creative ids, (n, d))

    @property
    def n_items(self) -> int:
        return len(self.creative_id) - 1

    @property
    def n_users(self) -> int:
        return len(self.user_raw) - 1


def creative_ids_from_indexer(imap: dict, n_items: int, path: Path) -> np.ndarray:
    """Raw creative id of each item re-id ([0] = 0) from the indexer's 'i' map (4.78M entries at 1M scale)."""
    creative = np.zeros(n_items + 1, np.int64)
    rows = np.fromiter(imap.values(), np.int64, len(imap))
    if all(type(k) is int for k in imap):
        creative[rows] = np.fromiter(imap.keys(), np.int64, len(imap))
        return creative
    for k, v in imap.items():  # digit strings (or a bad key, reported)
        if isinstance(k, str) and k.isdigit():
            creative[v] = int(k)
        elif type(k) is int:
            creative[v] = k
        else:
            raise DataError(f"{path} 'i': creative id {k!r} is not an integer id")
    return creative


def check_unknown_share(unknown: int, events: int, source: str, n_items: int, limit: float) -> None:
    """Items outside the indexer become item 0 (cold); a few are normal, many mean a wrong indexer (one
    covering 800 of 1,682 MovieLens items turned 18% of events into item 0, silently)."""
    if events and unknown / events > limit:
        raise DataError(
            f"{source}: {unknown:,} of {events:,} events ({unknown / events:.1%}) name items outside indexer.pkl "
            f"'i' (re-ids 1..{n_items}), more than data.max_unknown_item_share={limit:g}: the indexer does not "
            "belong to these sequences (raise data.max_unknown_item_share to read them as unknown item 0)"
        )


def indexer_of(raw: TgrRaw) -> dict:
    """The indexer.pkl a platform / parquet release of `raw` carries (raw id -> re-id maps)."""
    return {
        "u": {str(raw.user_raw[u]): u for u in range(1, raw.n_users + 1)},
        "i": {int(raw.creative_id[i]): i for i in range(1, raw.n_items + 1)},
        "f": {k: {int(v): int(v) for v in np.unique(c[c != 0]).tolist()} for k, c in raw.item_sparse.items()},
        "a": {1: 1, 0: 2},
    }


# ---- canonical tables (prepare's output), written in streaming batches --------------------------------
EVENT_SCHEMA = pa.schema(
    [("user", pa.int32()), ("item", pa.int32()), ("action", pa.int8()), ("ts", pa.int64())]
)


class EventSink:
    """Appends event batches to a parquet file (row group per batch); atomic on close()."""

    def __init__(self, path: Path):
        self.path = path
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, EVENT_SCHEMA)
        self.rows = 0

    def add(self, user: np.ndarray, item: np.ndarray, action: np.ndarray, ts: np.ndarray) -> None:
        if len(user) == 0:
            return
        batch = pa.record_batch(
            [
                pa.array(np.asarray(user, np.int32)),
                pa.array(np.asarray(item, np.int32)),
                pa.array(np.asarray(action, np.int8)),
                pa.array(np.asarray(ts, np.int64)),
            ],
            schema=EVENT_SCHEMA,
        )
        self._writer.write_batch(batch)
        self.rows += len(user)

    def close(self) -> int:
        self._writer.close()
        self._ctx.__exit__(None, None, None)
        return self.rows

    def abort(self) -> None:
        self._writer.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class EmbeddingSink:
    """A (n_items + 1, dim) float16 matrix on disk, filled by rows, plus its coverage mask.

    float16 memmap: a TencentGR-1M 1024-d table is 4.78M x 1024; in float32 RAM that alone is 20 GB.
    """

    def __init__(self, out: Path, feat: str, n_rows: int, dim: int):
        self.out, self.feat, self.dim = out, feat, dim
        self._ctx = atomic_path(out / PreparedTGR.mm_emb(feat))
        tmp = self._ctx.__enter__()
        self.matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_rows, dim))
        self.mask = np.zeros(n_rows, bool)

    def put(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        self.matrix[rows] = vectors
        self.mask[rows] = True

    def abort(self) -> None:
        del self.matrix
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def close(self) -> float:
        self.matrix.flush()
        del self.matrix
        self._ctx.__exit__(None, None, None)
        write_npy(self.out / PreparedTGR.mm_mask(self.feat), self.mask)
        return float(self.mask[1:].mean()) if len(self.mask) > 1 else 0.0


def int_columns(prefix: str, feats: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    return {f"{prefix}{k}": pa.array(np.asarray(v, np.int32)) for k, v in sorted(feats.items())}


def list_column(lists: list[list[int]]) -> pa.Array:
    return pa.array(lists, pa.list_(pa.int32()))


def write_users(
    out: Path, user_raw: np.ndarray, sparse: dict[str, np.ndarray], arrays: dict[str, list]
) -> None:
    n = len(user_raw)
    cols = {
        "user": pa.array(np.arange(n, dtype=np.int32)),
        "raw_user_id": pa.array(list(user_raw), pa.string()),
    }
    cols |= int_columns("u", {k: sparse.get(k, np.zeros(n, np.int64)) for k in USER_SPARSE})
    cols |= {f"u{k}": list_column(arrays.get(k) or [[] for _ in range(n)]) for k in USER_ARRAY}
    write_table(out / PreparedTGR.USERS, pa.table(cols))


def write_items(out: Path, creative_id: np.ndarray, sparse: dict[str, np.ndarray], in_training: int) -> None:
    n = len(creative_id)
    cols = {
        "item": pa.array(np.arange(n, dtype=np.int32)),
        "creative_id": pa.array(np.asarray(creative_id, np.int64)),
        "in_training": pa.array(np.arange(n) <= in_training),  # False: only in the candidate pool
    }
    cols |= int_columns("i", {k: sparse.get(k, np.zeros(n, np.int64)) for k in ITEM_SPARSE})
    write_table(out / PreparedTGR.ITEMS, pa.table(cols))


def write_candidates(out: Path, creative_id: np.ndarray, retrieval_id: np.ndarray, item: np.ndarray,
                     features: dict[str, np.ndarray]) -> None:  # fmt: skip
    cols = {
        "creative_id": pa.array(np.asarray(creative_id, np.int64)),
        "retrieval_id": pa.array(np.asarray(retrieval_id, np.int64)),
        "item": pa.array(np.asarray(item, np.int32)),
    }
    cols |= int_columns("i", features)
    write_table(out / PreparedTGR.CANDIDATES, pa.table(cols))


def write_predict_users(out: Path, user: np.ndarray, raw_user_id: list[str], known: np.ndarray) -> None:
    """In answer order. `user` is the id the predict file used (its events carry it); `known` is False
    for users missing from the indexer (cold-start: answered without a profile)."""
    cols = {
        "user": pa.array(np.asarray(user, np.int64)),
        "raw_user_id": pa.array(raw_user_id, pa.string()),
        "known": pa.array(np.asarray(known, bool)),
    }
    write_table(out / PreparedTGR.PREDICT_USERS, pa.table(cols))
