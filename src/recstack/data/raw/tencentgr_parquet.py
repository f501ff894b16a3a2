"""The TencentGR public parquet release, both directions (the same data as the platform layout):

    indexer.pkl                         {"u", "i", "f", "a"} raw id -> re-id (as in the platform layout)
    seq/*.parquet                       user_id int64 (re-id), seq list<struct<item_id, action_type, timestamp>>
    item_feat/*.parquet                 item_id int64 (re-id) + one nullable int64 column per sparse feature id
    user_feat/*.parquet                 user_id + nullable int64 103/104/105/109 + list<int64> 106/107/108/110
    mm_emb/emb_<id>_<dim>_parquet/      anonymous_cid string (a creative id), emb list<float32>
    predict_seq/*.parquet               the users to answer for (answer order = file order) and their histories
    candidate/*.parquet                 creative_id string, reid_creative_id int64 (0: never in training),
                                        retrieval_id int64, one struct<feature_value, is_str> per feature id

Reading goes file by file and row group by row group (ParquetFile.iter_batches); the list<struct> sequences
are flattened with Arrow compute, never event by event in Python. User ids are taken from `user_id`, never
from row order (the official baseline assumes 1..N in file order). Output: the same canonical tables as
`tencentgr_platform.read_platform`.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from recstack.artifacts import atomic_path, write_table
from recstack.data.raw.arrow import check_utf8
from recstack.data.raw.tencentgr import (
    ITEM_SPARSE,
    USER_ARRAY,
    USER_SPARSE,
    Candidates,
    CidIndex,
    EmbeddingSink,
    EventSink,
    Layout,
    TgrEvents,
    TgrRaw,
    apply_profiles,
    assemble,
    indexer_of,
    mm_not_found,
)
from recstack.data.raw.tencentgr_platform import (
    check_reids,
    check_unique_users,
    load_indexer,
    read_candidates,
    read_seq,
)
from recstack.errors import DataError
from recstack.paths import RawTencentGR
from recstack.tasks import ACTIONS, mm_widths

log = logging.getLogger(__name__)
BATCH_ROWS = 16_384  # rows per Arrow batch (users for seq/, items for item_feat/, ...)
BATCH_EVENTS = 2_000_000  # events buffered before a row group of events.parquet is written
SEQ_FIELDS = ("item_id", "action_type", "timestamp")
SEQ_TYPE = "list<struct<item_id int64, action_type int64, timestamp int64>>"


# ---- checked access to parquet parts -----------------------------------------------------------------
def parquet_parts(folder: Path, what: str) -> list[Path]:
    """The `*.parquet` files of `folder`, sorted by name; a missing or empty folder is an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected {what})")
    parts = sorted(p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
    if not parts:
        raise DataError(f"{folder}: no *.parquet files (expected {what})")
    return parts


def _open(path: Path, required: tuple[str, ...], what: str) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    missing = [n for n in required if n not in names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(names) or 'none'} (expected {what})"
        )
    return pf


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _check_type(
    pf: pq.ParquetFile, path: Path, name: str, ok: Callable[[pa.DataType], bool], expected: str
) -> None:
    t = pf.schema_arrow.field(name).type
    if not ok(t):
        raise DataError(f"{path}: column '{name}' must be {expected}, got {t}")


def _batches(
    pf: pq.ParquetFile, columns: list[str], bar: tqdm | None = None, batch_size: int | None = None
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row's number in the file, batch), row group by row group."""
    row0 = 0
    for batch in pf.iter_batches(batch_size=batch_size or BATCH_ROWS, columns=columns):
        yield row0, batch
        row0 += batch.num_rows
        if bar is not None:
            bar.update(batch.num_rows)


def _ints(arr: pa.Array, path: Path, name: str, row0: int) -> np.ndarray:
    """An integer array with no nulls, as int64 (the type was checked on the schema)."""
    if arr.null_count:
        row = row0 + int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path} row {row}: column '{name}' is null; expected an integer")
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _ints_or_zero(arr: pa.Array) -> np.ndarray:
    """A nullable integer (or all-null) array as int64, null -> 0 (missing feature)."""
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), np.int64)
    return arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _cids(arr: pa.Array, path: Path, name: str, row0: int) -> np.ndarray:
    """Creative ids given as digit strings (the release) or integers, as int64."""
    if _is_int(arr.type):
        return _ints(arr, path, name, row0)
    ok = pc.match_substring_regex(arr, r"^[0-9]{1,18}$").fill_null(False).to_numpy(zero_copy_only=False)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"{path} row {row0 + row}: column '{name}' holds {arr[row].as_py()!r}; expected a creative id "
            "(a string of digits)"
        )
    return pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False)


def _list_lengths(arr: pa.Array) -> np.ndarray:
    """Length of each list, 0 for a null list."""
    return pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


# ---- sequences -----------------------------------------------------------------------------------------
def _check_seq_schema(pf: pq.ParquetFile, path: Path) -> None:
    _check_type(pf, path, "user_id", _is_int, "integer (the user re-id)")
    t = pf.schema_arrow.field("seq").type
    ok = _is_list(t) and pa.types.is_struct(t.value_type)
    if ok:
        st = t.value_type
        names = [st.field(k).name for k in range(st.num_fields)]
        ok = all(f in names and _is_int(st.field(f).type) for f in SEQ_FIELDS)
    if not ok:
        raise DataError(f"{path}: column 'seq' must be {SEQ_TYPE}, got {t}")


def _seq_batch(
    batch: pa.RecordBatch, path: Path, row0: int, n_items: int, counts: Counter, n_users: int | None = None
) -> tuple[np.ndarray, TgrEvents]:
    """A batch of seq rows -> (user id of each row, its events grouped by row, time-ordered within a row).
    `n_users`: every user must be an indexer user (training sequences; predict users may be new)."""
    users = _ints(batch.column(0), path, "user_id", row0)
    if n_users is not None:
        bad = (users < 1) | (users > n_users)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path} row {row0 + r}: column 'user_id' is {users[r]}, not a user of indexer.pkl 'u' (re-ids "
                f"1..{n_users}; {int(bad.sum())} such row(s) in this batch): the indexer does not belong to seq/"
            )
    seq = batch.column(1)
    lengths = _list_lengths(seq)
    flat = pc.list_flatten(seq)
    rows = np.repeat(np.arange(len(users)), lengths)
    cols = []
    for name in SEQ_FIELDS:
        arr = pc.struct_field(flat, name)
        if arr.null_count:
            p = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            r = int(rows[p])
            raise DataError(
                f"{path} row {row0 + r} (user_id {users[r]}): event {p - int(lengths[:r].sum())} has a null "
                f"{name}; expected an integer"
            )
        cols.append(arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
    item, action, ts = cols
    bad = ~np.isin(action, ACTIONS)
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        r = int(rows[p])
        raise DataError(
            f"{path} row {row0 + r} (user_id {users[r]}): unknown action_type {int(action[p])}; "
            f"expected one of {ACTIONS}"
        )
    order = np.lexsort((ts, rows))  # rows (users) in file order, time order within a row, stable
    user = users[rows][order]
    item, action, ts = item[order], action[order], ts[order]
    # ids outside the indexer are cold (not errors): they become 0 and are counted
    cold = (item < 1) | (item > n_items)
    if cold.any():
        counts["events_unknown_item"] += int(cold.sum())
        item = np.where(cold, 0, item)
    return users, TgrEvents(user, item, action, ts)


def read_seq_parquet(
    folder: Path, sink: EventSink, n_items: int, counts: Counter, n_users: int | None = None
) -> np.ndarray:
    """Every seq/ (or predict_seq/) part into `sink`; returns the user id of each row, in file order.
    `n_users`: training sequences, whose users must all be in the indexer. A user on two rows is an error."""
    what = f"{folder.name}/*.parquet with columns user_id, seq {SEQ_TYPE}"
    files = [(p, _open(p, ("user_id", "seq"), what)) for p in parquet_parts(folder, what)]
    for p, pf in files:
        _check_seq_schema(pf, p)
    users: list[np.ndarray] = []
    pending: list[TgrEvents] = []
    n_pending = 0

    def flush() -> None:
        nonlocal pending, n_pending
        if pending:
            sink.add(
                *(np.concatenate([getattr(e, f) for e in pending]) for f in ("user", "item", "action", "ts"))
            )
        pending, n_pending = [], 0

    total = sum(pf.metadata.num_rows for _p, pf in files)
    with tqdm(total=total, desc=f"{folder.name}/", unit=" users", mininterval=2) as bar:
        for p, pf in files:
            for row0, batch in _batches(pf, ["user_id", "seq"], bar):
                u, ev = _seq_batch(batch, p, row0, n_items, counts, n_users)
                users.append(u)
                pending.append(ev)
                n_pending += len(ev)
                if n_pending >= BATCH_EVENTS:
                    flush()
    flush()
    if total == 0:
        raise DataError(f"{folder}: no rows in {len(files)} parquet file(s) (empty; expected {what})")
    out = np.concatenate(users)
    ends = np.cumsum([pf.metadata.num_rows for _p, pf in files])

    def where(k: int) -> str:
        f = int(np.searchsorted(ends, k, side="right"))
        return f"{files[f][0].name} row {k - (int(ends[f - 1]) if f else 0)}"

    check_unique_users(out, where, str(folder))
    return out


# ---- users and items ----------------------------------------------------------------------------------
def read_user_feat(
    folder: Path, n_users: int, counts: Counter, into: tuple[dict, dict] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Profiles by user re-id; `into`: (sparse, arrays) to update (the users this folder lists)."""
    what = "user_feat/*.parquet with user_id and nullable 103/104/105/109 int64, 106/107/108/110 list<int64>"
    if into is None:
        sparse = {k: np.zeros(n_users + 1, np.int64) for k in USER_SPARSE}
        arrays: dict[str, list] = {k: [[] for _ in range(n_users + 1)] for k in USER_ARRAY}
    else:
        sparse, arrays = into
    for path in parquet_parts(folder, what):
        pf = _open(path, ("user_id",), what)
        _check_type(pf, path, "user_id", _is_int, "integer (the user re-id)")
        names = pf.schema_arrow.names
        s_cols = [k for k in USER_SPARSE if k in names]
        a_cols = [k for k in USER_ARRAY if k in names]
        for k in s_cols:
            _check_type(
                pf, path, k, lambda t: _is_int(t) or pa.types.is_null(t), "a nullable integer (feature re-id)"
            )
        for k in a_cols:
            _check_type(
                pf,
                path,
                k,
                lambda t: pa.types.is_null(t) or (_is_list(t) and _is_int(t.value_type)),
                "a nullable list of integers (feature re-ids)",
            )
        for row0, batch in _batches(pf, ["user_id", *s_cols, *a_cols]):
            uid = _ints(batch.column("user_id"), path, "user_id", row0)
            ok = (uid >= 1) & (uid <= n_users)
            if not ok.all():
                counts["profiles_unknown_user"] += int((~ok).sum())
            known = uid[ok]
            for k in s_cols:
                sparse[k][known] = _ints_or_zero(batch.column(k))[ok]
            for k in a_cols:
                col = batch.column(k)
                if pa.types.is_null(col.type):
                    lists = [None] * len(col)
                else:
                    values = pc.list_flatten(col)
                    if values.null_count:
                        p = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
                        r = int(np.searchsorted(np.cumsum(_list_lengths(col)), p, side="right"))
                        raise DataError(f"{path} row {row0 + r}: column '{k}' has a null inside its list")
                    lists = col.to_pylist()
                target = arrays[k]
                for r in np.flatnonzero(ok).tolist():
                    target[uid[r]] = lists[r] or []
    return sparse, arrays


def read_item_feat(folder: Path, n_rows: int, n_items: int, counts: Counter) -> dict[str, np.ndarray]:
    what = "item_feat/*.parquet with item_id and one nullable int64 column per item feature id"
    feats = {k: np.zeros(n_rows, np.int64) for k in ITEM_SPARSE}
    for path in parquet_parts(folder, what):
        pf = _open(path, ("item_id",), what)
        _check_type(pf, path, "item_id", _is_int, "integer (the item re-id)")
        cols = [k for k in ITEM_SPARSE if k in pf.schema_arrow.names]
        for k in cols:
            _check_type(
                pf, path, k, lambda t: _is_int(t) or pa.types.is_null(t), "a nullable integer (feature re-id)"
            )
        for row0, batch in _batches(pf, ["item_id", *cols]):
            iid = _ints(batch.column("item_id"), path, "item_id", row0)
            ok = (iid >= 1) & (iid <= n_items)
            if not ok.all():
                counts["item_feat_unknown_item"] += int((~ok).sum())
            for k in cols:
                feats[k][iid[ok]] = _ints_or_zero(batch.column(k))[ok]
    return feats


# ---- candidates and embeddings ------------------------------------------------------------------------
def _is_feature_col(t: pa.DataType) -> bool:
    if _is_int(t) or pa.types.is_null(t):
        return True
    if not pa.types.is_struct(t):
        return False
    idx = t.get_field_index("feature_value")
    return idx >= 0 and (_is_int(t.field(idx).type) or pa.types.is_null(t.field(idx).type))


def read_candidate_parquet(folder: Path, counts: Counter):
    """(creative ids, retrieval ids, {feature id: values}, reid_creative_id or None), rows in file order."""
    what = "candidate/*.parquet with creative_id string, retrieval_id int64, struct<feature_value, is_str> features"
    cids, rids, reids = [], [], []
    feat_parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    n = 0
    has_reid = True
    for path in parquet_parts(folder, what):
        pf = _open(path, ("creative_id",), what)
        names = pf.schema_arrow.names
        _check_type(pf, path, "creative_id", lambda t: _is_str(t) or _is_int(t), "a string (creative id)")
        extra = [c for c in ("retrieval_id", "reid_creative_id") if c in names]
        for c in extra:
            _check_type(pf, path, c, _is_int, "integer")
        has_reid &= "reid_creative_id" in names
        fcols = [c for c in names if c.isdigit()]
        for c in fcols:
            _check_type(pf, path, c, _is_feature_col, "struct<feature_value int64, is_str int64> (a feature)")
        for row0, batch in _batches(pf, ["creative_id", *extra, *fcols]):
            cids.append(_cids(batch.column("creative_id"), path, "creative_id", row0))
            m = batch.num_rows
            if "retrieval_id" in extra:
                rids.append(_ints(batch.column("retrieval_id"), path, "retrieval_id", row0))
            else:  # as the platform reader: row order
                rids.append(np.arange(n, n + m, dtype=np.int64))
            if "reid_creative_id" in extra:
                reids.append(_ints_or_zero(batch.column("reid_creative_id")))
            for c in fcols:
                col = batch.column(c)
                v = pc.struct_field(col, "feature_value") if pa.types.is_struct(col.type) else col
                feat_parts.setdefault(c, []).append((n, _ints_or_zero(v)))
            n += m
    if n == 0:
        raise DataError(f"{folder}: no candidates (empty; expected {what})")
    feats = {}
    for c, parts in feat_parts.items():
        col = np.zeros(n, np.int64)
        for start, v in parts:
            col[start : start + len(v)] = v
        if col.any():  # as the platform reader: a feature no candidate has is no column
            feats[c] = col
    reid = np.concatenate(reids) if has_reid else None
    return np.concatenate(cids), np.concatenate(rids), feats, reid


def read_mm_parquet(
    mm_root: Path,
    feat: str,
    lookup: CidIndex,
    sink: EmbeddingSink,
    counts: Counter,
    only_missing: bool = False,
) -> None:
    """emb_<feat>_<dim>_parquet/ into `sink`; `only_missing`: only rows the sink has no vector for yet."""
    dim = sink.dim
    folder = mm_root / f"emb_{feat}_{dim}_parquet"
    if not folder.is_dir():
        others = sorted(p.name for p in mm_root.glob(f"emb_{feat}_*_parquet")) if mm_root.is_dir() else []
        raise mm_not_found(f"{folder}: folder not found (multimodal feature {feat}, dimension {dim})", others)
    what = f"emb_{feat}_{dim}_parquet/*.parquet with anonymous_cid string, emb list<float32> of length {dim}"
    unknown = nulls = 0
    for path in parquet_parts(folder, what):
        pf = _open(path, ("anonymous_cid", "emb"), what)
        _check_type(pf, path, "anonymous_cid", lambda t: _is_str(t) or _is_int(t), "a string (creative id)")
        _check_type(
            pf,
            path,
            "emb",
            lambda t: _is_list(t) and (pa.types.is_floating(t.value_type) or _is_int(t.value_type)),
            "a list of floats",
        )
        rows_per_batch = max(
            1, min(BATCH_ROWS, (1 << 24) // dim)
        )  # <= 64 MB of float32 (a 4096-d row: 16 KB)
        for row0, batch in _batches(pf, ["anonymous_cid", "emb"], batch_size=rows_per_batch):
            cid = _cids(batch.column("anonymous_cid"), path, "anonymous_cid", row0)
            emb = batch.column("emb")
            lengths = _list_lengths(emb)
            has = ~emb.is_null().to_numpy(zero_copy_only=False) if emb.null_count else np.ones(len(cid), bool)
            bad = has & (lengths != dim)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{path} row {row0 + r}: anonymous_cid {cid[r]} has an embedding of length {lengths[r]}, "
                    f"expected {dim} (emb_{feat}_{dim})"
                )
            values = pc.list_flatten(emb)
            if values.null_count:
                p = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
                r = int(np.flatnonzero(has)[p // dim])
                raise DataError(
                    f"{path} row {row0 + r}: anonymous_cid {cid[r]} has a null inside its embedding"
                )
            vec = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
            rows = lookup(cid[has])
            known = rows > 0
            if only_missing:
                known &= ~sink.mask[rows]
            unknown += int((~known).sum())
            nulls += int((~has).sum())
            if known.any():
                sink.put(rows[known], vec[known])
    counts[f"mm_{feat}_unknown_creative"] += unknown
    if nulls:
        counts[f"mm_{feat}_null_emb"] += nulls


# ---- the release's folders ----------------------------------------------------------------------------
def release_folders(root: Path, eval_dir: str | Path | None = None) -> tuple[Path, Path | None]:
    """(training folder, evaluation folder or None) of a parquet release.

    Three forms: one folder with seq/ and its own predict_seq/ + candidate/ (eval_dir None); the release as
    published, a training folder (seq/, item_feat/, user_feat/, mm_emb/, indexer.pkl) and an evaluation folder
    (seq/ = the users to answer for, candidate/, its own feature folders and indexer.pkl), given as
    data.raw_dir + data.eval_dir or found as the two subfolders of data.raw_dir (the one without candidate/
    trains, the one with it evaluates: the official baseline's TRAIN_DATA_PATH and EVAL_DATA_PATH).
    """
    if eval_dir:
        ev = Path(eval_dir)
        for name in ("seq", "candidate"):
            if not (ev / name).is_dir():
                raise DataError(
                    f"{ev / name}: folder not found; data.eval_dir must be the release's evaluation folder "
                    "(seq/ with the histories of the users to answer for, candidate/, indexer.pkl)"
                )
        return root, ev
    if (root / "seq").is_dir():
        return root, None
    subs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "seq").is_dir()) if root.is_dir() else []
    train = [d for d in subs if not (d / "candidate").is_dir()]
    evals = [d for d in subs if (d / "candidate").is_dir()]
    if len(train) == 1 and len(evals) == 1:
        return train[0], evals[0]
    found = ", ".join(f"{d.name}/ ({'seq/ + candidate/' if d in evals else 'seq/'})" for d in subs) or "none"
    raise DataError(
        f"{root}: no parquet release here: expected seq/ (one folder), or one training folder (seq/, no "
        f"candidate/) and one evaluation folder (seq/ + candidate/) inside it, or data.eval_dir; found {found}"
    )


def merge_indexers(train: dict, train_path: Path, ev: dict, eval_path: Path) -> dict:
    """The two folders' indexers as one: every raw id they share must have the same re-id (a clear error
    otherwise), ids only the evaluation side knows (new users) are added and must not reuse a re-id."""
    out = dict(train)
    for key, what in (("u", "user"), ("i", "creative")):
        merged = dict(train[key])
        for k, v in ev[key].items():
            w = merged.setdefault(k, v)
            if w != v:
                raise DataError(
                    f"{eval_path} '{key}': {what} id {k!r} has re-id {v}, but {train_path} gives it {w}; the "
                    "training and evaluation folders' indexers must agree (same raw id -> same re-id)"
                )
        if len(merged) > len(train[key]):
            check_reids(merged, eval_path, key, f"{what} (with {train_path.parent.name}/indexer.pkl)")
        out[key] = merged
    return out


def read_item_text(path: Path, creative: np.ndarray, counts: Counter) -> np.ndarray:
    """item_text.parquet (creative_id, text: a recstack extension) -> text per item row ("" = none)."""
    what = "columns creative_id (integer or digit string), text (UTF-8 string)"
    pf = _open(path, ("creative_id", "text"), what)
    _check_type(pf, path, "creative_id", lambda t: _is_str(t) or _is_int(t), "an integer or a digit string")
    _check_type(pf, path, "text", _is_str, "a string")
    lookup = CidIndex(creative)
    text = np.full(len(creative), "", dtype=object)
    item_rows: list[np.ndarray] = []
    for row0, batch in _batches(pf, ["creative_id", "text"]):
        cid = _cids(batch.column(0), path, "creative_id", row0)
        check_utf8(batch.column(1), path, "text", row0)
        rows = lookup(cid)
        seen = rows > 0
        text[rows[seen]] = np.asarray(batch.column(1).fill_null("").to_pylist(), dtype=object)[seen]
        item_rows.append(rows)
    rows = np.concatenate(item_rows) if item_rows else np.zeros(0, np.int64)
    counts["item_text_unknown_creative"] += int((rows == 0).sum())
    uniq, n = np.unique(rows[rows > 0], return_counts=True)
    if (n > 1).any():
        dup = np.flatnonzero(rows == uniq[n > 1][0])[:2].tolist()
        raise DataError(
            f"{path}: column 'creative_id' repeats {int(creative[rows[dup[0]]])} (rows {dup}); one text per item"
        )
    return text


# ---- reading the parquet layout into the canonical tables ---------------------------------------------
class ParquetLayout(Layout):
    """The parquet release's folders (one, or a training + an evaluation folder), read through the shared
    `assemble`; where the evaluation side has no parquet, the platform layout's predict_seq.jsonl /
    predict_set.jsonl next to seq/ are read instead."""

    def __init__(self, root: Path, strict: bool, eval_dir: str | Path | None):
        train_root, eval_root = release_folders(root, eval_dir)
        self.raw, self.strict = RawTencentGR(train_root), strict
        self.ev = RawTencentGR(eval_root) if eval_root is not None else None
        self.indexer_path = self.raw.indexer
        self.profiles: dict[
            int, dict
        ] = {}  # profiles of predict_seq.jsonl (fallback), as the platform reader

    def _eval(self, name: str) -> Path | None:
        """The evaluation folder's `name`/ where it has one."""
        return (
            self.ev.parquet_dir(name) if self.ev is not None and self.ev.parquet_dir(name).is_dir() else None
        )

    def indexer(self) -> dict:
        idx = load_indexer(self.raw.indexer)
        if self.ev is not None and self.ev.indexer.is_file():
            idx = merge_indexers(idx, self.raw.indexer, load_indexer(self.ev.indexer), self.ev.indexer)
        return idx

    def candidates(self, counts: Counter) -> Candidates:
        cand_dir = (self.ev if self.ev is not None else self.raw).parquet_dir("candidate")
        if cand_dir.is_dir():
            return Candidates(*read_candidate_parquet(cand_dir, counts), source=str(cand_dir))
        if self.raw.predict_set.is_file():
            cid, rid, feat = read_candidates(self.raw.predict_set, self.strict, counts)
            return Candidates(cid, rid, feat, None, str(self.raw.predict_set))
        raise DataError(
            f"{cand_dir}: folder not found; the eval side needs the candidate pool: candidate/*.parquet "
            "(creative_id, reid_creative_id, retrieval_id, features), or the platform layout's predict_set.jsonl"
        )

    def read_train(self, sink: EventSink, n_users: int, n_items: int, counts: Counter) -> tuple[int, str]:
        seq_dir = self.raw.parquet_dir("seq")
        return len(read_seq_parquet(seq_dir, sink, n_items, counts, n_users=n_users)), str(seq_dir)

    def read_predict(
        self, sink: EventSink, n_users: int, n_items: int, counts: Counter
    ) -> tuple[np.ndarray, str]:
        pred_dir = self.ev.parquet_dir("seq") if self.ev is not None else self.raw.parquet_dir("predict_seq")
        if pred_dir.is_dir():
            return read_seq_parquet(pred_dir, sink, n_items, counts), str(pred_dir)
        if self.raw.predict_seq.is_file():
            pred = read_seq(self.raw.predict_seq, sink, n_users, n_items, self.strict, counts)
            self.profiles = pred.profiles
            return np.array(pred.line_users, np.int64), str(pred_dir)
        raise DataError(
            f"{pred_dir}: folder not found; the eval side needs the users to answer for and their "
            "histories: predict_seq/*.parquet (user_id, seq, as seq/), or the platform layout's "
            "predict_seq.jsonl"
        )

    def user_features(self, n_users: int, counts: Counter) -> tuple[dict[str, np.ndarray], dict[str, list]]:
        sparse, arrays = read_user_feat(self.raw.parquet_dir("user_feat"), n_users, counts)
        if (ev_users := self._eval("user_feat")) is not None:  # the evaluation folder's own profiles
            read_user_feat(ev_users, n_users, counts, into=(sparse, arrays))
        apply_profiles(self.profiles, sparse, arrays, n_users, counts)
        return sparse, arrays

    def item_features(self, n_rows: int, n_items: int, counts: Counter) -> dict[str, np.ndarray]:
        item_feats = read_item_feat(self.raw.parquet_dir("item_feat"), n_rows, n_items, counts)
        if (ev_items := self._eval("item_feat")) is not None:  # fills what the training folder lacks
            for key, col in read_item_feat(ev_items, n_rows, n_items, Counter()).items():
                f = item_feats[key]
                f[:] = np.where(f == 0, col, f)
        return item_feats

    def read_mm(
        self, feat: str, creative: np.ndarray, lookup: CidIndex, sink: EmbeddingSink, counts: Counter
    ) -> None:
        read_mm_parquet(self.raw.parquet_dir("mm_emb"), feat, lookup, sink, counts)
        ev_mm = self.ev.parquet_dir("mm_emb") if self.ev is not None else None
        if ev_mm is not None and (ev_mm / f"emb_{feat}_{sink.dim}_parquet").is_dir():
            # the evaluation folder's copy: only rows the training folder left empty (pool-only items);
            # a second pass over a copy costs a re-read of its files, nothing else
            read_mm_parquet(ev_mm, feat, lookup, sink, Counter(), only_missing=True)


def read_parquet_layout(
    root: str | Path, out: Path, strict: bool = True, eval_dir: str | Path | None = None, **options: Any
) -> dict[str, object]:
    """Read the parquet release under `root` into the canonical tables in `out` (as `read_platform` does).

    The eval side is the evaluation folder (see `release_folders`) or, in one folder, `predict_seq/` +
    `candidate/`; where those are absent, the platform layout's `predict_seq.jsonl` / `predict_set.jsonl`
    next to seq/ are read instead. `strict` applies to those JSON-lines files (cut-off lines); parquet input
    has no partial records to skip.
    """
    layout = ParquetLayout(Path(root), strict, eval_dir)
    return assemble(layout, out, Counter(), **options)


# ---- writing the parquet layout (tests; builders write the platform layout) ---------------------------
def _seq_table(events: TgrEvents, users: np.ndarray) -> pa.Table:
    """One row per user in `users` order: its events (grouped by user in `events`) as list<struct>."""
    if len(events) and np.any(np.diff(events.user) < 0):
        raise ValueError("events must be sorted by user for writing")
    starts = np.searchsorted(events.user, users, side="left")
    lengths = np.searchsorted(events.user, users, side="right") - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    take = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
    struct = pa.StructArray.from_arrays(
        [
            pa.array(np.asarray(getattr(events, f), np.int64)[take], pa.int64())
            for f in ("item", "action", "ts")
        ],
        names=list(SEQ_FIELDS),
    )
    return pa.table(
        {"user_id": pa.array(np.asarray(users, np.int64)), "seq": pa.ListArray.from_arrays(offsets, struct)}
    )


def _nullable(values: np.ndarray) -> pa.Array:
    v = np.asarray(values, np.int64)
    return pa.array(v, pa.int64(), mask=v == 0)


def _write_parts(folder: Path, table: pa.Table, rows_per_file: int | None) -> None:
    step = rows_per_file or max(table.num_rows, 1)
    names = [f"part-{k:05d}.parquet" for k in range(max(1, -(-table.num_rows // step)))]
    stale = sorted(p.name for p in folder.glob("*.parquet") if p.name not in names) if folder.is_dir() else []
    if stale:
        raise ValueError(
            f"{folder}: holds other parquet files ({', '.join(stale)}); write into a fresh folder"
        )
    for k, name in enumerate(names):
        write_table(folder / name, table.slice(k * step, step))


def write_parquet_layout(
    raw: TgrRaw,
    root: str | Path,
    emb_dims: dict[str, int] | None = None,
    rows_per_file: int | None = None,
    two_folders: bool = False,
) -> None:
    """Serialise `raw` in the parquet release's layout; every file atomically. `rows_per_file` splits each
    folder into several parts (tests of multi-file reading).

    `two_folders`: as published, `root/train/` (seq/, item_feat/, user_feat/, mm_emb/, indexer.pkl) and
    `root/eval/` (seq/ = the predict users' histories, candidate/, its own item_feat/, mm_emb/ and indexer.pkl,
    and user_feat/ of the users it answers for); else one folder with predict_seq/ and candidate/ beside seq/.
    """
    root = Path(root)
    train = RawTencentGR(root / "train" if two_folders else root)
    ev = RawTencentGR(root / "eval") if two_folders else train
    indexer = pickle.dumps(indexer_of(raw))
    for side in {train.root, ev.root}:
        side.mkdir(parents=True, exist_ok=True)
        with atomic_path(RawTencentGR(side).indexer) as tmp:
            tmp.write_bytes(indexer)
    _write_parts(train.parquet_dir("seq"), _seq_table(raw.events, np.unique(raw.events.user)), rows_per_file)
    pred = _seq_table(raw.predict_events, raw.predict_users)
    _write_parts(ev.parquet_dir("seq" if two_folders else "predict_seq"), pred, rows_per_file)

    n_u, n_i = raw.n_users, raw.n_items
    ucols: dict[str, pa.Array] = {"user_id": pa.array(np.arange(1, n_u + 1, dtype=np.int64))}
    for k in USER_SPARSE:
        ucols[k] = _nullable(raw.user_sparse[k][1:] if k in raw.user_sparse else np.zeros(n_u))
    for k in USER_ARRAY:
        lists = raw.user_array.get(k) or [[] for _ in range(n_u + 1)]
        ucols[k] = pa.array([v or None for v in lists[1:]], pa.list_(pa.int64()))
    users = pa.table(ucols)
    _write_parts(train.parquet_dir("user_feat"), users, rows_per_file)
    if two_folders:  # the evaluation folder profiles the users it answers for (those the indexer knows)
        answer = np.unique(raw.predict_users[(raw.predict_users >= 1) & (raw.predict_users <= n_u)])
        _write_parts(ev.parquet_dir("user_feat"), users.take(pa.array(answer - 1)), rows_per_file)

    icols = {"item_id": pa.array(np.arange(1, n_i + 1, dtype=np.int64))}
    icols |= {k: _nullable(raw.item_sparse[k][1:]) for k in ITEM_SPARSE if k in raw.item_sparse}
    for side in {train.root, ev.root}:
        _write_parts(RawTencentGR(side).parquet_dir("item_feat"), pa.table(icols), rows_per_file)

    reid_of = {int(c): i for i, c in enumerate(raw.creative_id.tolist()) if i}
    cc = raw.cand_creative_id.tolist()
    ccols: dict[str, pa.Array] = {
        "creative_id": pa.array([str(c) for c in cc], pa.string()),
        "reid_creative_id": pa.array([reid_of.get(c, 0) for c in cc], pa.int64()),
        "retrieval_id": pa.array(np.arange(len(cc), dtype=np.int64)),
    }
    for k, v in sorted(raw.cand_features.items()):
        v = np.asarray(v, np.int64)
        ccols[k] = pa.StructArray.from_arrays(
            [pa.array(v), pa.array(np.zeros(len(v), np.int64))],
            names=["feature_value", "is_str"],
            mask=pa.array(v == 0),
        )
    _write_parts(ev.parquet_dir("candidate"), pa.table(ccols), rows_per_file)

    dims = mm_widths(emb_dims)
    for feat, (cids, mat) in raw.mm.items():
        dim = dims[feat]
        if mat.shape[1] != dim:
            raise ValueError(f"mm feature {feat}: matrix has {mat.shape[1]} columns, expected {dim}")
        flat = pa.array(np.asarray(mat, np.float32).reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, len(cids) * dim + 1, dim, dtype=np.int32))
        table = pa.table(
            {
                "anonymous_cid": pa.array([str(c) for c in np.asarray(cids).tolist()], pa.string()),
                "emb": pa.ListArray.from_arrays(offsets, flat),
            }
        )
        for side in {train.root, ev.root}:
            folder = RawTencentGR(side).parquet_dir("mm_emb") / f"emb_{feat}_{dim}_parquet"
            _write_parts(folder, table, rows_per_file)
