"""The TencentGR platform layout, both directions (what the competition machines mounted):

    seq.jsonl            one JSON array per user: [user_id, item_id, user_feature, item_feature, action_type,
                         timestamp] records; a user-profile record has item_id/item_feature/action_type null
    seq_offsets.pkl      byte offset of each line        indexer.pkl   {"u", "i", "f", "a"} raw id -> re-id
    item_feat_dict.json  {item re-id: {feature id: value}} (one JSON object: streamed, never loaded whole)
    creative_emb/        emb_81_32.pkl {creative_id: vector}; emb_<id>_<dim>/ JSON-lines parts
                         {"anonymous_cid": ..., "emb": [...]}
    predict_seq.jsonl    histories of the users to answer for (same records as seq.jsonl)
    predict_set.jsonl    candidates {"creative_id", "retrieval_id", "features"}

Reading streams every file line by line (orjson: 2-3x the standard library on this data, as public
solutions report), so a TencentGR-1M seq.jsonl (~18 GB) never sits in memory.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from recstack.artifacts import atomic_path
from recstack.data.raw import safe_pickle
from recstack.data.raw import tencentgr as tgr
from recstack.data.raw.progress import Heartbeat
from recstack.data.raw.tencentgr import (
    ITEM_SPARSE,
    USER_ARRAY,
    USER_SPARSE,
    EmbeddingSink,
    EventSink,
    TgrEvents,
    TgrRaw,
    indexer_of,
)
from recstack.errors import DataError
from recstack.paths import RawTencentGR
from recstack.tasks import ACTIONS, mm_widths

log = logging.getLogger(__name__)
BATCH_EVENTS = 2_000_000
MM_BLOCK = 1 << 16  # embedding vectors per memmap store, at most ...
MM_BLOCK_BYTES = 1 << 26  # ... 64 MiB of float32 (a 4096-d emb_84 block of 64k vectors would be 1 GiB)
FRAGMENT_BLOCK = 1 << 16  # items per block when serialising item features (bounded temporaries)


# ---- reading: shared pieces --------------------------------------------------------------------------
def iter_json_lines(path: Path, strict: bool, counts: dict[str, int]) -> Iterator[tuple[int, object]]:
    """(line number from 1, parsed value) for each non-empty line; a line that does not parse is an error
    in strict mode, else skipped and counted (a cut-off last line is reported as truncated)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        for no, line in enumerate(f, 1):
            if line.isspace():  # (a line is never b""; isspace stops at the first character, strip copies)
                continue
            try:
                yield no, orjson.loads(line)
            except orjson.JSONDecodeError as e:
                kind = (
                    "truncated record (the file ends mid-line)"
                    if not line.endswith(b"\n")
                    else "not valid JSON"
                )
                if strict:
                    raise DataError(f"{path} line {no}: {kind}: {e}") from None
                counts[f"skipped_{'truncated' if 'truncated' in kind else 'invalid'}_lines"] += 1
                log.warning("%s line %d: %s; skipped (data.strict=false)", path, no, kind)


def _check_int(v: object, where: str) -> int:
    if type(v) is not int:  # bool is not a feature value either
        raise DataError(f"{where}: expected an integer, got {v!r}")
    return v


def load_indexer(path: Path) -> dict:
    idx = safe_pickle.load(path)
    if not isinstance(idx, dict) or not {"u", "i", "f"} <= set(idx):
        raise DataError(f"{path}: expected a dict with keys 'u', 'i', 'f' (raw id -> re-id maps)")
    for key, what in (("u", "user"), ("i", "creative")):
        check_reids(idx[key], path, key, what)
    return idx


def check_reids(m: object, path: Path, key: str, what: str) -> None:
    """A map raw id -> re-id must give every raw id its own integer re-id >= 1 (4.78M entries: vectorised)."""
    if not isinstance(m, dict):
        raise DataError(f"{path} '{key}': expected a dict raw {what} id -> re-id, got {type(m).__name__}")
    if not m:
        return
    if any(type(v) is not int for v in m.values()):
        k = next(k for k, v in m.items() if type(v) is not int)
        raise DataError(f"{path} '{key}': {what} id {k!r} maps to {m[k]!r}; expected an integer re-id")
    reid = np.fromiter(m.values(), np.int64, len(m))
    if reid.min() < 1:
        k = next(k for k, v in m.items() if v < 1)
        raise DataError(f"{path} '{key}': {what} id {k!r} maps to {m[k]}; re-ids start at 1 (0 = none)")
    uniq, counts = np.unique(reid, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        keys = [k for k, v in m.items() if v == dup][:3]
        raise DataError(
            f"{path} '{key}': {what} ids {', '.join(map(repr, keys))} all map to re-id {dup} "
            f"({int((counts > 1).sum())} re-id(s) shared); each raw id needs its own re-id"
        )


class SeqParser:
    """Turns seq.jsonl / predict_seq.jsonl lines into event batches and user profiles."""

    def __init__(
        self, path: Path, n_users: int, n_items: int, counts: dict[str, int], known_users: bool = False
    ):
        self.path, self.n_users, self.n_items, self.counts = path, n_users, n_items, counts
        # training sequences: every user must be in the indexer (predict users may be new: cold-start)
        self.known_users = known_users
        self.profiles: dict[int, dict] = {}
        self.line_users: list[int] = []  # the user of each line, in file order
        self.line_nos: list[int] = []  # its line number
        self._buf: list[list[int]] = [[], [], [], []]  # user, item, action, ts of each event
        self._line_events: list[int] = []  # events of each buffered line, in file order

    def line(self, no: int, recs: object) -> None:
        if self._fast_line(no, recs):
            return
        where = f"{self.path} line {no}"
        events: list[list[int]] = [[], [], [], []]  # kept apart: a line that fails adds nothing
        if not isinstance(recs, list) or not recs:
            raise DataError(f"{where}: expected a non-empty JSON array of records, got {type(recs).__name__}")
        user = None
        for k, rec in enumerate(recs):
            if not isinstance(rec, list) or len(rec) != 6:
                got = len(rec) if isinstance(rec, list) else type(rec).__name__
                raise DataError(
                    f"{where} record {k}: expected [user_id, item_id, user_feature, item_feature, "
                    f"action_type, timestamp] (6 fields), got {got}"
                )
            u, i, uf, _itf, a, t = rec
            user = _check_int(u, f"{where} record {k} user_id")
            if self.known_users and not 1 <= user <= self.n_users:
                raise DataError(
                    f"{where} record {k}: user_id {user} is not a user of indexer.pkl 'u' (re-ids 1..{self.n_users}); "
                    "the indexer does not belong to this seq.jsonl"
                )
            _check_int(t, f"{where} record {k} timestamp")
            if i is None:  # user-profile record
                if uf is not None:
                    self.profiles[u] = self._profile(uf, f"{where} record {k} user_feature")
                continue
            _check_int(i, f"{where} record {k} item_id")
            if a not in ACTIONS or type(a) is not int:
                raise DataError(f"{where} record {k}: unknown action_type {a!r}; expected one of {ACTIONS}")
            events[0].append(u), events[1].append(i), events[2].append(a), events[3].append(t)
        for col, got in zip(self._buf, events, strict=True):
            col.extend(got)
        self._line_events.append(len(events[0]))
        self.line_users.append(user)
        self.line_nos.append(no)

    def _fast_line(self, no: int, recs: object) -> bool:
        """The checks of `line` done column-wise in C loops (~10x faster on TencentGR-1M). Any anomaly returns
        False before anything is consumed, and `line` redoes the line record by record for the exact error."""
        if type(recs) is not list or not recs or set(map(type, recs)) != {list} or set(map(len, recs)) != {6}:
            return False
        u, i, uf, _itf, a, t = zip(*recs, strict=True)
        if set(map(type, u)) != {int} or set(map(type, t)) != {int}:
            return False
        if self.known_users and (min(u) < 1 or max(u) > self.n_users):
            return False
        prof, k = [], -1
        for _ in range(i.count(None)):  # user-profile records (usually one)
            k = i.index(None, k + 1)
            prof.append(k)
        cuts = list(zip([-1, *prof], [*prof, len(i)], strict=True))  # item records lie between profiles

        def items_of(col: tuple) -> list:
            return list(chain.from_iterable(col[s + 1 : e] for s, e in cuts)) if prof else col

        i, a, t_items, u_items = items_of(i), items_of(a), items_of(t), items_of(u)
        if i and (set(map(type, i)) != {int} or set(map(type, a)) != {int} or not set(a) <= set(ACTIONS)):
            return False
        for k in prof:
            if uf[k] is not None:
                self.profiles[u[k]] = self._profile(uf[k], f"{self.path} line {no} record {k} user_feature")
        b = self._buf
        b[0].extend(u_items), b[1].extend(i), b[2].extend(a), b[3].extend(t_items)
        self._line_events.append(len(i))
        self.line_users.append(u[-1])
        self.line_nos.append(no)
        return True

    def _profile(self, uf: object, where: str) -> dict:
        if not isinstance(uf, dict):
            raise DataError(f"{where}: expected a feature dict, got {type(uf).__name__}")
        for key, v in uf.items():
            if isinstance(v, list):
                for x in v:
                    _check_int(x, f"{where} feature {key}")
            else:
                _check_int(v, f"{where} feature {key}")
        return uf

    def pending(self) -> int:
        return len(self._buf[0])

    def take(self) -> TgrEvents:
        u, i, a, t = (np.asarray(x, np.int64) for x in self._buf)
        line = np.repeat(np.arange(len(self._line_events)), self._line_events)  # buffered line of each event
        self._buf, self._line_events = [[], [], [], []], []
        # lines (users) stay in file order, events go in time order within a line (a stable sort: ties keep
        # their file order); lines already in time order, the usual case, skip the sort and its copies
        if len(t) > 1 and not np.all((np.diff(t) >= 0) | (np.diff(line) != 0)):
            order = np.lexsort((t, line))
            u, i, a, t = u[order], i[order], a[order], t[order]
        # ids outside the indexer are cold (not errors): they become 0 and are counted
        cold = (i < 1) | (i > self.n_items)
        if cold.any():
            self.counts["events_unknown_item"] += int(cold.sum())
            i = np.where(cold, 0, i)
        return TgrEvents(u, i, a, t)


def read_seq(
    path: Path,
    sink: EventSink,
    n_users: int,
    n_items: int,
    strict: bool,
    counts: dict[str, int],
    known_users: bool = False,
) -> SeqParser:
    parser = SeqParser(path, n_users, n_items, counts, known_users)
    beat = Heartbeat(log, f"reading {path.name}")  # the log file sees the loop move, not only the tqdm bar
    for _no, recs in tqdm(
        iter_json_lines(path, strict, counts), desc=path.name, unit=" users", mininterval=2
    ):
        parser.line(_no, recs)
        if parser.pending() >= BATCH_EVENTS:
            ev = parser.take()
            sink.add(ev.user, ev.item, ev.action, ev.ts)
            beat.beat(users=len(parser.line_users), events=sink.rows)
    ev = parser.take()
    sink.add(ev.user, ev.item, ev.action, ev.ts)
    if not parser.line_users:
        raise DataError(f"{path}: no records (empty file)")
    check_unique_users(
        np.asarray(parser.line_users, np.int64), lambda k: f"line {parser.line_nos[k]}", str(path)
    )
    return parser


def check_unique_users(users: np.ndarray, where: Callable[[int], str], source: str) -> None:
    """One line (row) per user: a user listed twice would be answered twice (189 answers for 188 users) or
    split its history in two. `where(k)` names the k-th user's line or file row."""
    uniq, counts = np.unique(users, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        places = [where(int(k)) for k in np.flatnonzero(users == dup)[:3]]
        raise DataError(
            f"{source}: user_id {dup} is listed {int(counts[counts > 1][0])} times ({', '.join(places)}); "
            f"expected one line per user ({int((counts > 1).sum())} user(s) repeated)"
        )


# item_feat_dict.json is one big object of flat objects: `{"47086": {"112": 14, ...}, ...}`. Inner objects
# hold only numbers and lists, never braces, so each entry is matched without parsing the whole file.
_ENTRY = re.compile(rb'"(\d+)"\s*:\s*(\{[^{}]*\})')


def read_item_feat_dict(
    path: Path, n_rows: int, strict: bool, counts: dict[str, int], chunk: int = 1 << 24
) -> dict[str, np.ndarray]:
    """Feature id -> (n_rows,) int64 value per item re-id (0 = none), read `chunk` bytes at a time, entry by
    entry (an item given twice: the later entry's features over the earlier ones)."""
    feats = {k: np.zeros(n_rows, np.int64) for k in ITEM_SPARSE}
    tail = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            data = tail + block
            end = 0
            for m in _ENTRY.finditer(data):
                item = int(m.group(1))
                try:
                    values = orjson.loads(m.group(2))
                except orjson.JSONDecodeError as e:
                    raise DataError(f"{path}: item {item}: not valid JSON ({e})") from None
                if not 1 <= item < n_rows:
                    counts["item_feat_unknown_item"] += 1
                    end = m.end()
                    continue
                for key, v in values.items():
                    if key in feats:
                        feats[key][item] = _check_int(v, f"{path}: item {item} feature {key}")
                end = m.end()
            tail = data[end:]
            if not block:
                break
    rest = tail.strip().strip(b",").strip()
    if rest not in (b"", b"}"):
        msg = f"{path}: truncated or malformed after the last complete item ({rest[:60]!r}...)"
        if strict:
            raise DataError(msg)
        counts["item_feat_truncated"] += 1
        log.warning("%s; skipped (data.strict=false)", msg)
    return feats


def _cid(v: object, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    raise DataError(f"{where}: creative id {v!r} is not an integer id")


def read_mm(
    root: Path,
    feat: str,
    cid_to_row: dict[int, int],
    sink: EmbeddingSink,
    strict: bool,
    counts: dict[str, int],
) -> None:
    """emb_81_<dim>.pkl (restricted unpickling) or emb_<id>_<dim>/ JSON-lines parts, into `sink`."""
    dim = sink.dim
    pkl = root / f"emb_{feat}_{dim}.pkl"
    folder = root / f"emb_{feat}_{dim}"
    unknown = 0
    rows = _RowBatch(sink)
    if pkl.is_file():
        table = safe_pickle.load(pkl)
        if not isinstance(table, dict):
            raise DataError(f"{pkl}: expected a dict creative_id -> vector")
        for cid, vec in table.items():
            v = np.asarray(vec, np.float32).reshape(-1)
            if v.shape[0] != dim:
                raise DataError(
                    f"{pkl}: creative_id {cid} has an embedding of length {v.shape[0]}, expected {dim}"
                )
            row = cid_to_row.get(_cid(cid, str(pkl)))
            if row is None:
                unknown += 1
            else:
                rows.add(row, v)
    elif folder.is_dir():
        parts = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        for part in parts:
            for no, obj in iter_json_lines(part, strict, counts):
                where = f"{part} line {no}"
                if not isinstance(obj, dict) or "anonymous_cid" not in obj or "emb" not in obj:
                    raise DataError(f"{where}: expected {{'anonymous_cid': ..., 'emb': [...]}}")
                v = np.asarray(obj["emb"], np.float32)
                if v.ndim != 1 or v.shape[0] != dim:
                    raise DataError(
                        f"{where}: embedding of length {v.size}, expected {dim} (emb_{feat}_{dim})"
                    )
                row = cid_to_row.get(_cid(obj["anonymous_cid"], where))
                if row is None:
                    unknown += 1
                else:
                    rows.add(row, v)
    else:
        others = sorted(p.name for p in root.glob(f"emb_{feat}_*")) if root.is_dir() else []
        raise tgr.mm_not_found(
            f"{root}: no emb_{feat}_{dim}.pkl or emb_{feat}_{dim}/ (multimodal feature {feat})", others
        )
    rows.flush()
    counts[f"mm_{feat}_unknown_creative"] += unknown


class _RowBatch:
    """Vectors buffered and stored `MM_BLOCK` rows at a time: one memmap store per vector cost ~5 us x 4.78M
    at TencentGR-1M. A row given twice keeps its last vector, as one store per vector did."""

    def __init__(self, sink: EmbeddingSink):
        self.sink, self.rows, self.vecs = sink, [], []
        self.block = max(1, min(MM_BLOCK, MM_BLOCK_BYTES // (4 * sink.dim)))

    def add(self, row: int, vec: np.ndarray) -> None:
        self.rows.append(row)
        self.vecs.append(vec)
        if len(self.rows) >= self.block:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        rows, vecs = np.array(self.rows, np.int64), np.stack(self.vecs)
        self.rows, self.vecs = [], []
        uniq, last = np.unique(rows[::-1], return_index=True)
        if len(uniq) < len(rows):  # numpy leaves the winner of a repeated index in one store unspecified
            keep = np.sort(len(rows) - 1 - last)
            rows, vecs = rows[keep], vecs[keep]
        self.sink.put(rows, vecs)


def read_candidates(path: Path, strict: bool, counts: dict[str, int]):
    """(creative ids, retrieval ids, feature id -> value per candidate (0 = absent)), in file order; the
    feature columns in the order their ids first appear.

    Features are kept sparse, (row, value) per feature id, and scattered into zero columns at the end: the
    previous dense fill (`feats.setdefault(key, [0] * row)` evaluated its default on every feature of every
    line) was quadratic, 29 of the 34 minutes of `prepare` on TencentGR-1M's 660k candidates (issue #15)."""
    cids: list[int] = []
    rids: list[int] = []
    feats: dict[str, tuple[list[int], list[int]]] = {}  # feature id -> (rows, values)
    first: dict[int, tuple[int, dict]] = {}  # creative id -> (line, features) of its first line
    for no, obj in iter_json_lines(path, strict, counts):
        where = f"{path} line {no}"
        if not isinstance(obj, dict) or "creative_id" not in obj:
            raise DataError(f"{where}: candidate without 'creative_id'")
        cid = _cid(obj["creative_id"], where)
        f = obj.get("features") or {}
        if cid in first:  # one creative listed twice: the same candidate folded, two different ones refused
            line, f0 = first[cid]
            if f != f0:
                raise DataError(
                    f"{where}: creative_id {cid} is listed again (first at line {line}) with other "
                    "features; expected one line per candidate"
                )
            counts["candidates_duplicate_folded"] += 1
            continue
        first[cid] = (no, f)
        row = len(cids)
        cids.append(cid)
        rids.append(_check_int(obj.get("retrieval_id", row), f"{where} retrieval_id"))
        for key, v in f.items():
            rows, values = feats.get(key) or feats.setdefault(key, ([], []))
            rows.append(row)
            values.append(_check_int(v, f"{where} feature {key}"))
    if counts.get("candidates_duplicate_folded"):
        log.warning(
            "%s: %d candidate line(s) repeat an earlier line's creative_id and features: folded",
            path,
            counts["candidates_duplicate_folded"],
        )
    if not cids:
        raise DataError(f"{path}: no candidates (empty file)")
    columns = {}
    for key, (rows, values) in feats.items():
        col = np.zeros(len(cids), np.int64)
        col[np.array(rows, np.int64)] = np.array(values, np.int64)
        columns[key] = col
    return np.array(cids, np.int64), np.array(rids, np.int64), columns


# ---- reading the platform layout into the canonical tables --------------------------------------------
class PlatformLayout(tgr.Layout):
    """The platform layout's files (one folder), read through the shared `tgr.assemble`."""

    def __init__(self, root: Path, strict: bool):
        self.raw, self.strict = RawTencentGR(root), strict
        self.indexer_path = self.raw.indexer
        self.profiles: list[dict[int, dict]] = []  # user-profile records of seq.jsonl, predict_seq.jsonl

    def indexer(self) -> dict:
        return load_indexer(self.raw.indexer)

    def candidates(self, counts: Counter) -> tgr.Candidates:
        cid, rid, feat = read_candidates(self.raw.predict_set, self.strict, counts)
        return tgr.Candidates(cid, rid, feat, None, str(self.raw.predict_set))

    def read_train(self, sink: EventSink, n_users: int, n_items: int, counts: Counter) -> tuple[int, str]:
        seq = read_seq(self.raw.seq, sink, n_users, n_items, self.strict, counts, known_users=True)
        self.profiles.append(seq.profiles)
        return len(seq.line_users), str(self.raw.seq)

    def read_predict(
        self, sink: EventSink, n_users: int, n_items: int, counts: Counter
    ) -> tuple[np.ndarray, str]:
        pred = read_seq(self.raw.predict_seq, sink, n_users, n_items, self.strict, counts)
        self.profiles.append(pred.profiles)
        return np.array(pred.line_users, np.int64), str(self.raw.predict_seq)

    def user_features(self, n_users: int, counts: Counter) -> tuple[dict[str, np.ndarray], dict[str, list]]:
        sparse = {k: np.zeros(n_users + 1, np.int64) for k in USER_SPARSE}
        arrays: dict[str, list] = {k: [[] for _ in range(n_users + 1)] for k in USER_ARRAY}
        for profiles in self.profiles:  # profiles from both files
            tgr.apply_profiles(profiles, sparse, arrays, n_users, counts)
        return sparse, arrays

    def item_features(self, n_rows: int, n_items: int, counts: Counter) -> dict[str, np.ndarray]:
        path = self.raw.item_feat_dict
        return read_item_feat_dict(path, n_rows, self.strict, counts) if path.is_file() else {}

    def read_mm(
        self, feat: str, creative: np.ndarray, lookup: tgr.CidIndex, sink: EmbeddingSink, counts: Counter
    ) -> None:
        cid_to_row = {int(c): r for r, c in enumerate(creative.tolist()) if r}
        read_mm(self.raw.creative_emb, feat, cid_to_row, sink, self.strict, counts)


def read_platform(root: str | Path, out: Path, strict: bool = True, **options: Any) -> dict[str, object]:
    """Read the platform layout under `root` into prepare's canonical tables in `out`; returns the figures.
    `options`: tencentgr.assemble's (mm_feats, emb_dims, max_unknown_item_share, steps, mm_required)."""
    return tgr.assemble(PlatformLayout(Path(root), strict), out, _Counts(), **options)


class _Counts(dict):
    def __missing__(self, key: str) -> int:
        return 0


# ---- writing the platform layout (used by the dataset builders) ---------------------------------------
def _feature_fragments(item_sparse: dict[str, np.ndarray], n: int) -> list[bytes]:
    """Each item's feature dict serialised once: 90M records reuse these bytes instead of re-encoding.

    Formatted by hand, byte for byte what `orjson.dumps` gives for a dict of ints (`{"100":5,"112":14}`,
    no spaces; keys are ITEM_SPARSE's digit strings, so nothing to escape): orjson 3.13 returns each
    bytes object inside its 4 KiB write buffer, so 4.78M kept fragments held ~19 GiB at TencentGR-1M
    (bench/README.md "Synthetic builders' memory"); these take ~100 B each. Columns go to Python ints block by block,
    so no (n, features) list of ints sits in memory either."""
    keys = [k for k in ITEM_SPARSE if k in item_sparse]
    heads = [b'"%s":' % k.encode() for k in keys]
    out: list[bytes] = []
    for s in range(0, n, FRAGMENT_BLOCK):
        cols = [item_sparse[k][s : min(s + FRAGMENT_BLOCK, n)].tolist() for k in keys]
        for row in zip(*cols, strict=True):
            out.append(b"{" + b",".join([h + b"%d" % v for h, v in zip(heads, row, strict=True) if v]) + b"}")
    if not keys:  # no feature columns: every item has the empty dict
        out = [b"{}"] * n
    return out


def _write_seq(
    path: Path, raw: TgrRaw, events: TgrEvents, users: np.ndarray, frags: list[bytes]
) -> list[int]:
    """One line per user in `users` order; item records then the profile record. Returns line offsets."""
    starts = np.searchsorted(events.user, users, side="left") if len(events) else np.zeros(len(users), int)
    ends = np.searchsorted(events.user, users, side="right") if len(events) else np.zeros(len(users), int)
    order_ok = np.all(np.diff(events.user) >= 0) if len(events) else True
    if not order_ok:
        raise ValueError("events must be sorted by user for writing")
    offsets = []
    pos = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for u, s, e in zip(users.tolist(), starts.tolist(), ends.tolist(), strict=True):
            recs = [
                b"[%d,%d,null,%s,%d,%d]" % (u, i, frags[i] if i < len(frags) else b"{}", a, t)
                for i, a, t in zip(
                    events.item[s:e].tolist(),
                    events.action[s:e].tolist(),
                    events.ts[s:e].tolist(),
                    strict=True,
                )
            ]
            uf = {
                k: int(raw.user_sparse[k][u])
                for k in USER_SPARSE
                if k in raw.user_sparse and raw.user_sparse[k][u]
            }
            uf |= {
                k: raw.user_array[k][u] for k in USER_ARRAY if k in raw.user_array and raw.user_array[k][u]
            }
            recs.append(b"[%d,null,%s,null,null,%d]" % (u, orjson.dumps(uf), int(raw.profile_ts[u])))
            line = b"[" + b",".join(recs) + b"]\n"
            offsets.append(pos)
            f.write(line)
            pos += len(line)
    return offsets


def _pickle_to(path: Path, obj: object) -> None:
    """Pickle straight into the (atomic) file: the same bytes as `pickle.dumps`, without holding them all
    (the 4.78M-vector emb_81 pickle is ~0.8 GB)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(obj, f)


def write_platform(raw: TgrRaw, root: str | Path, emb_dims: dict[str, int] | None = None) -> None:
    """Serialise `raw` in the platform layout; every file atomically."""
    root = Path(root)
    paths = RawTencentGR(root)
    root.mkdir(parents=True, exist_ok=True)
    frags = _feature_fragments(raw.item_sparse, raw.n_items + 1)
    # events are sorted by user: take run starts instead of np.unique's sorted copy (94M ids at 1M users)
    u = raw.events.user
    train_users = u[np.r_[0, np.flatnonzero(np.diff(u)) + 1]] if len(u) else u
    offsets = _write_seq(paths.seq, raw, raw.events, train_users, frags)
    _pickle_to(paths.seq_offsets, offsets)
    del offsets
    _write_seq(paths.predict_seq, raw, raw.predict_events, raw.predict_users, frags)
    _pickle_to(paths.indexer, indexer_of(raw))
    with atomic_path(paths.item_feat_dict) as tmp, open(tmp, "wb") as f:
        f.write(b"{")  # block by block: the whole object's text (~0.5 GB at 4.78M items) is never held
        for s in range(1, raw.n_items + 1, FRAGMENT_BLOCK):
            e = min(s + FRAGMENT_BLOCK, raw.n_items + 1)
            f.write(
                (b", " if s > 1 else b"") + b", ".join([b'"%d": %s' % (i, frags[i]) for i in range(s, e)])
            )
        f.write(b"}")
    del frags
    with atomic_path(paths.predict_set) as tmp, open(tmp, "wb") as f:
        for r, cid in enumerate(raw.cand_creative_id.tolist()):
            feats = {k: int(v[r]) for k, v in raw.cand_features.items() if v[r]}
            f.write(orjson.dumps({"creative_id": cid, "retrieval_id": r, "features": feats}) + b"\n")
    dims = mm_widths(emb_dims)
    for feat, (cids, mat) in raw.mm.items():
        dim = dims[feat]
        if mat.shape[1] != dim:
            raise ValueError(f"mm feature {feat}: matrix has {mat.shape[1]} columns, expected {dim}")
        if feat == "81":  # the platform ships 81 as a pickle, the others as JSON-lines parts
            _pickle_to(
                paths.creative_emb / f"emb_{feat}_{dim}.pkl",
                {int(c): v for c, v in zip(cids.tolist(), mat, strict=True)},
            )
            continue
        part = paths.creative_emb / f"emb_{feat}_{dim}" / "part-00000"
        with atomic_path(part) as tmp, open(tmp, "wb") as f:
            for c, v in zip(cids.tolist(), mat, strict=True):
                f.write(
                    orjson.dumps({"anonymous_cid": str(c), "emb": v}, option=orjson.OPT_SERIALIZE_NUMPY)
                    + b"\n"
                )
