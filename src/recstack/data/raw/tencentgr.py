"""TencentGR (Tencent Advertising Algorithm Challenge 2025, all-modality generative recommendation): the
in-memory dataset that builders produce and writers serialise, and the canonical tables both readers write.

Ids are the platform's re-ids: users and items from 1 (0 = none). Items that appear only in the candidate
pool (never in training, `reid_creative_id` 0 in the parquet release) get ids after the indexer's items, so
every item with a feature or an embedding has a row.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.artifacts import atomic_path, write_npy, write_table
from recstack.data.raw.progress import Steps
from recstack.errors import DataError, ModalityAbsent
from recstack.paths import PreparedTGR
from recstack.tasks import mm_widths

log = logging.getLogger(__name__)

USER_SPARSE = ("103", "104", "105", "109")
USER_ARRAY = ("106", "107", "108", "110")
ITEM_SPARSE = ("100", "101", "102", "111", "112", *map(str, range(114, 123)))  # 111 is id-like


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


# Of the warm candidates whose pool features and item features (through indexer.pkl) both set a feature, the
# share that agree on all of them. A shuffled 'i' map passes every other check (each id maps somewhere): on
# MovieLens it leaves 132 of 1,682 candidates agreeing, the right one all 1,682. Below this share the indexer
# is taken not to belong to the candidates: an error. Half: far below a matching release, far above chance.
FEATURE_AGREEMENT_MIN = 0.5
FEATURE_AGREEMENT_QUORUM = 20  # fewer comparable candidates decide nothing (tiny or feature-less pools)


def check_feature_agreement(
    cand: Candidates,
    c_item: np.ndarray,
    item_feats: dict[str, np.ndarray],
    n_items: int,
    indexer: Path,
    counts: Counter,
) -> None:
    warm = (c_item >= 1) & (c_item <= n_items)
    compared = np.zeros(len(c_item), bool)
    agree = np.ones(len(c_item), bool)
    for key, col in cand.features.items():
        if key not in ITEM_SPARSE or key not in item_feats:
            continue
        mine = item_feats[key][np.where(warm, c_item, 0)]
        both = warm & (col != 0) & (mine != 0)
        compared |= both
        agree &= ~both | (col == mine)
    n = int(compared.sum())
    if n < FEATURE_AGREEMENT_QUORUM:
        return
    share = float((agree & compared).sum()) / n
    counts["candidates_feature_agreement"] = round(share, 4)
    if share < FEATURE_AGREEMENT_MIN:
        raise DataError(
            f"{cand.source}: only {int((agree & compared).sum())} of {n} candidates ({share:.1%}) have the features "
            f"item_feat_dict.json gives their item through {indexer}; expected at least "
            f"{FEATURE_AGREEMENT_MIN:.0%}: the indexer's 'i' map does not belong to these candidates"
        )


def write_candidates(
    out: Path,
    creative_id: np.ndarray,
    retrieval_id: np.ndarray,
    item: np.ndarray,
    features: dict[str, np.ndarray],
) -> None:
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


# ---- one assembly for both layouts (platform jsonl, parquet release) ----------------------------------
class CidIndex:
    """Vectorised creative id -> item row lookup (0 = unknown)."""

    def __init__(self, creative: np.ndarray):
        rows = np.flatnonzero(creative)
        rows = rows[rows > 0]
        order = np.argsort(creative[rows], kind="stable")
        self.keys, self.rows = creative[rows][order], rows[order]

    def __call__(self, cids: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(cids), np.int64)
        pos = np.minimum(np.searchsorted(self.keys, cids), len(self.keys) - 1)
        return np.where(self.keys[pos] == cids, self.rows[pos], 0).astype(np.int64)


@dataclass
class Candidates:
    creative_id: np.ndarray  # int64, one per pool entry
    retrieval_id: np.ndarray
    features: dict[str, np.ndarray]  # feature id -> int64 value per entry (0 = none)
    reid: np.ndarray | None  # the release's own reid_creative_id (parquet), checked against the indexer
    source: str  # the file / folder read (named by warnings)


class Layout(ABC):
    """Where a release keeps each part: what the platform and parquet readers differ in. `assemble` does
    the rest once (ids, cold pool items, event streams and their checks, profiles, features, embeddings)."""

    indexer_path: Path  # the training indexer: creative-id errors name it

    @abstractmethod
    def indexer(self) -> dict:
        """The checked raw id -> re-id maps ({"u", "i", "f", ...})."""

    @abstractmethod
    def candidates(self, counts: Counter) -> Candidates: ...

    @abstractmethod
    def read_train(self, sink: EventSink, n_users: int, n_items: int, counts: Counter) -> tuple[int, str]:
        """Training sequences into `sink`; (number of training users, the source read)."""

    @abstractmethod
    def read_predict(
        self, sink: EventSink, n_users: int, n_items: int, counts: Counter
    ) -> tuple[np.ndarray, str]:
        """Histories of the users to answer for into `sink`; (their user ids in answer order, the source)."""

    @abstractmethod
    def user_features(self, n_users: int, counts: Counter) -> tuple[dict[str, np.ndarray], dict[str, list]]:
        """(sparse feature -> value per user, array feature -> list per user), row = user re-id."""

    @abstractmethod
    def item_features(self, n_rows: int, n_items: int, counts: Counter) -> dict[str, np.ndarray]:
        """Sparse feature -> value per item row (0 = none)."""

    @abstractmethod
    def read_mm(
        self, feat: str, creative: np.ndarray, lookup: CidIndex, sink: EmbeddingSink, counts: Counter
    ) -> None:
        """The emb_<feat> vectors into `sink` (rows by `lookup` of their creative id)."""


def apply_profiles(
    profiles: dict[int, dict],
    sparse: dict[str, np.ndarray],
    arrays: dict[str, list],
    n_users: int,
    counts: Counter,
) -> None:
    """User-profile records of the jsonl sequences into the user feature columns (array features as lists)."""
    for u, uf in profiles.items():
        if not 1 <= u <= n_users:
            counts["profiles_unknown_user"] += 1
            continue
        for key, v in uf.items():
            if key in sparse and not isinstance(v, list):
                sparse[key][u] = v
            elif key in arrays:
                arrays[key][u] = v if isinstance(v, list) else [v]


def _stream_events(path: Path, read: Callable[[EventSink], tuple]) -> tuple[tuple, int]:
    """`read(sink)` into a new events file; (what read returned, events written); nothing left on error."""
    sink = EventSink(path)
    try:
        got = read(sink)
    except BaseException:
        sink.abort()
        raise
    return got, sink.close()


def mm_not_found(msg: str, others: list[str]) -> DataError:
    """The error for a multimodal feature without its file at the configured width: ModalityAbsent (skipped
    with data.mm_required=false) when the feature has no file at any width, else a DataError naming the files
    found, a setting to fix (data.emb_dims) that is never skipped."""
    if others:
        return DataError(f"{msg}; found {', '.join(others)} (set its dimension in data.emb_dims)")
    return ModalityAbsent(msg)


def assemble(
    layout: Layout,
    out: Path,
    counts: Counter,
    mm_feats: tuple[str, ...] = ("81",),
    emb_dims: dict[str, int] | None = None,
    max_unknown_item_share: float = 0.05,
    steps: Steps | None = None,
    mm_required: bool = True,
) -> dict[str, object]:
    """Read a release through `layout` into prepare's canonical tables in `out`; returns the figures. Both
    readers (read_platform, read_parquet_layout) pass their keyword options here unchanged.
    `steps` logs one line per step (counts, seconds); a new one named `prepare` when not given.
    `mm_required` false: a feature of `mm_feats` with no file at all is written with no vectors (coverage 0,
    every model then goes without it) and counted as `mm_<id>_absent`, with a warning."""
    steps = steps or Steps(log, "prepare")
    idx = layout.indexer()
    n_users, n_items = max(idx["u"].values(), default=0), max(idx["i"].values(), default=0)
    user_raw = np.full(n_users + 1, "", dtype=object)
    for k, v in idx["u"].items():
        user_raw[v] = str(k)
    creative = creative_ids_from_indexer(idx["i"], n_items, layout.indexer_path)
    steps.done(f"read {layout.indexer_path.name}", users=n_users, items=n_items)

    # candidates first: items only in the pool get rows after the indexer's items
    cand = layout.candidates(counts)
    c_cid = cand.creative_id
    c_item = CidIndex(creative)(c_cid)
    cold = c_item == 0
    if cand.reid is not None:
        mismatch = cand.reid != c_item
        if mismatch.any():  # the indexer decides; a different reid means another release's indexer
            r = int(np.flatnonzero(mismatch)[0])
            counts["candidates_reid_mismatch"] = int(mismatch.sum())
            log.warning(
                "%s: %d candidates' reid_creative_id disagrees with indexer.pkl (first: row %d, creative "
                "id %d: reid %d, indexer %d); using indexer.pkl",
                cand.source,
                int(mismatch.sum()),
                r,
                c_cid[r],
                cand.reid[r],
                c_item[r],
            )
    creative = np.concatenate([creative, np.unique(c_cid[cold])])
    lookup = CidIndex(creative)
    c_item = lookup(c_cid)
    counts["candidates_cold"] = int(cold.sum())
    n_rows = len(creative)
    steps.done(f"read candidates {Path(cand.source).name}", candidates=len(c_cid), cold=int(cold.sum()))

    (n_train, source), counts["events"] = _stream_events(
        out / PreparedTGR.EVENTS, lambda sink: layout.read_train(sink, n_users, n_items, counts)
    )
    unknown = counts["events_unknown_item"]
    check_unknown_share(unknown, counts["events"], source, n_items, max_unknown_item_share)
    steps.done(f"read {Path(source).name}", users=n_train, events=counts["events"])
    (p_users, source), counts["predict_events"] = _stream_events(
        out / PreparedTGR.PREDICT_EVENTS, lambda sink: layout.read_predict(sink, n_users, n_items, counts)
    )
    unknown = counts["events_unknown_item"] - unknown
    check_unknown_share(unknown, counts["predict_events"], source, n_items, max_unknown_item_share)
    steps.done(f"read {Path(source).name}", users=len(p_users), events=counts["predict_events"])

    sparse, arrays = layout.user_features(n_users, counts)
    write_users(out, user_raw, sparse, arrays)
    known = (p_users >= 1) & (p_users <= n_users)
    counts["predict_users_unknown"] = int((~known).sum())  # cold-start users: answered from the pool
    raw_ids = [user_raw[u] if k else str(u) for u, k in zip(p_users.tolist(), known.tolist(), strict=True)]
    write_predict_users(out, p_users, raw_ids, known)
    steps.done("wrote the user tables", users=n_users, predict_users=len(p_users))

    item_feats = layout.item_features(n_rows, n_items, counts)
    steps.done("read the item features", items=n_rows - 1, features=len(item_feats))
    check_feature_agreement(cand, c_item, item_feats, n_items, layout.indexer_path, counts)
    for key, col in cand.features.items():  # the pool's own features fill what the item features lack
        if key in ITEM_SPARSE:
            f = item_feats.setdefault(key, np.zeros(n_rows, np.int64))
            f[c_item] = np.where(f[c_item] == 0, col, f[c_item])
    write_items(out, creative, item_feats, n_items)
    write_candidates(
        out, c_cid, cand.retrieval_id, c_item, {k: v for k, v in cand.features.items() if k in ITEM_SPARSE}
    )
    steps.done("wrote the item and candidate tables", items=n_rows - 1, candidates=len(c_cid))

    dims = mm_widths(emb_dims)
    for feat in mm_feats:
        esink = EmbeddingSink(out, feat, n_rows, dims[feat])
        try:
            layout.read_mm(feat, creative, lookup, esink, counts)
        except ModalityAbsent as e:
            if mm_required:
                esink.abort()
                raise
            log.warning("%s: going on without emb_%s (data.mm_required=false): no item has it", e, feat)
            counts[f"mm_{feat}_absent"] = 1
        except BaseException:
            esink.abort()
            raise
        counts[f"coverage_mm_{feat}"] = esink.close()
        steps.done(f"read emb_{feat} ({dims[feat]}-d)", vectors=int(esink.mask.sum()))

    return {
        "users": n_users,
        "items": n_items,
        "items_with_pool": n_rows - 1,
        "candidates": len(c_cid),
        "predict_users": len(p_users),
        "training_users": n_train,
        **counts,
    }
