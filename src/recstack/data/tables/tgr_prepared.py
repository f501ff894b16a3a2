"""Readers of the TencentGR canonical tables written by `prepare` (for later stages and notebooks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recstack.config import SEEN_SETTINGS
from recstack.errors import DataError
from recstack.paths import PreparedTGR


def read_events(
    folder: str | Path, predict: bool = False, columns: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Event columns as numpy arrays, grouped by user and time-ordered within a user."""
    name = PreparedTGR.PREDICT_EVENTS if predict else PreparedTGR.EVENTS
    table = pq.read_table(Path(folder) / name, columns=columns)
    return {c: table.column(c).to_numpy() for c in table.column_names}


def group_bounds(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, start, end) of each contiguous run of one user in the event arrays."""
    if len(user) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    end = np.r_[start[1:], len(user)]
    return user[start].astype(np.int64), start, end


def histories(user: np.ndarray, item: np.ndarray, wanted: np.ndarray) -> list[np.ndarray]:
    """The item sequence of each user in `wanted` (empty for users without events)."""
    users, start, end = group_bounds(user)
    where = {int(u): (s, e) for u, s, e in zip(users, start, end, strict=True)}
    empty = np.zeros(0, item.dtype)
    return [item[slice(*where[u])] if u in where else empty for u in wanted.tolist()]


def histories_before(user: np.ndarray, item: np.ndarray, queries: pd.DataFrame) -> list[np.ndarray]:
    """Each held-out query's history: its user's items before its target (`event_index`, a row of the
    event arrays), as valid_targets / stack_queries give them. Events are grouped by user."""
    users, start, _ = group_bounds(user)
    g = np.searchsorted(users, queries["user"].to_numpy())
    cut = queries["event_index"].to_numpy()
    return [item[s:c] for s, c in zip(start[g].tolist(), cut.tolist(), strict=True)]


def read_table(folder: str | Path, name: str) -> pd.DataFrame:
    return pq.read_table(Path(folder) / name).to_pandas()


def pool_items(folder: str | Path) -> np.ndarray:
    """Item rows of the candidate pool (unique, in retrieval order)."""
    cand = pq.read_table(Path(folder) / PreparedTGR.CANDIDATES, columns=["item"]).column("item").to_numpy()
    _, first = np.unique(cand, return_index=True)
    return cand[np.sort(first)].astype(np.int64)


def read_mm(folder: str | Path, feat: str, n_rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A provided multimodal matrix (n_rows, dim) float16, memory-mapped, row == item re-id, and its (n_rows,)
    coverage mask; shapes checked against the item table and the feature's width (MM_DIMS / data.emb_dims)."""
    path, mask_path = Path(folder) / PreparedTGR.mm_emb(feat), Path(folder) / PreparedTGR.mm_mask(feat)
    for p in (path, mask_path):
        if not p.is_file():
            raise DataError(f"{p}: not found; prepare writes it for each of data.mm_feats (here '{feat}')")
    matrix = np.load(path, mmap_mode="r")
    if matrix.ndim != 2 or matrix.shape != (n_rows, dim) or not np.issubdtype(matrix.dtype, np.floating):
        raise DataError(
            f"{path}: emb_{feat} has shape {matrix.shape} dtype {matrix.dtype}; expected "
            f"({n_rows}, {dim}) float: one row per item re-id, {dim} = the width of emb_{feat}"
        )
    mask = np.load(mask_path)
    if mask.shape != (n_rows,) or mask.dtype != np.bool_:
        raise DataError(f"{mask_path}: shape {mask.shape} dtype {mask.dtype}; expected ({n_rows},) bool")
    return matrix, mask


def read_item_text(folder: str | Path, n_rows: int) -> list[str] | None:
    """Item texts by re-id ("" = none), or None when the data has no item text (the real TencentGR has none)."""
    path = Path(folder) / PreparedTGR.ITEM_TEXT
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["item", "text"])
    item = table.column("item").to_numpy().astype(np.int64)
    bad = np.flatnonzero((item < 0) | (item >= n_rows))
    if len(bad):
        r = int(bad[0])
        raise DataError(f"{path}: column 'item' row {r} is {int(item[r])}; expected 0..{n_rows - 1}")
    texts: list[str] = [""] * n_rows
    for i, t in zip(item.tolist(), table.column("text").to_pylist(), strict=True):
        texts[i] = t or ""
    return texts


# ---- held-out targets: local validation and the level-2 (stacker) training queries --------------------
def last_clicks(
    events: dict[str, np.ndarray],
    n_users: int,
    seed: int,
    exclude_users: np.ndarray | None = None,
    pool: np.ndarray | None = None,
) -> pd.DataFrame:
    """The last click (or conversion) of up to `n_users` sampled users (those in `exclude_users` left out):
    user, item, action, n_hist (events before it), event_index (its row in the event arrays). With `pool`
    (item rows), the last click of a candidate, after at least one event: a predict user's target is one."""
    user, action = events["user"], events["action"]
    users, start, _ = group_bounds(user)
    is_click = action >= 1
    if pool is not None:
        in_pool = np.zeros(int(max(events["item"].max(initial=0), pool.max(initial=0))) + 1, bool)
        in_pool[pool] = True
        is_click &= in_pool[events["item"]]
        is_click[start] = False  # a query needs a history
    clicks = np.flatnonzero(is_click)
    owner = np.searchsorted(start, clicks, side="right") - 1  # group of each click
    last = np.full(len(users), -1)
    np.maximum.at(last, owner, clicks)
    has = np.flatnonzero(last >= 0)
    if exclude_users is not None and len(exclude_users):
        has = has[~np.isin(users[has], exclude_users)]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(has, size=min(n_users, len(has)), replace=False))
    pos = last[pick]
    return pd.DataFrame(
        {
            "user": users[pick].astype(np.int64),
            "item": events["item"][pos].astype(np.int64),
            "action": action[pos].astype(np.int8),
            "n_hist": (pos - start[pick]).astype(np.int64),
            "event_index": pos.astype(np.int64),  # row of the target in events.parquet
        }
    )


def before_cuts(user: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """(E,) bool: False from each cut row (a held-out target) to the end of its user's run, True elsewhere.
    The one definition of "training events" for every stage that holds targets out."""
    users, _, end = group_bounds(user)
    g = np.searchsorted(users, user[cut]) if len(cut) else np.zeros(0, np.int64)
    held = np.zeros(len(user) + 1, np.int64)  # +1 at each cut, -1 at its user's end: cumsum > 0 = held out
    np.add.at(held, cut, 1)
    np.add.at(held, end[g], -1)
    return np.cumsum(held[:-1]) == 0


STACK_SEED_OFFSET = 1  # the stacker's queries are drawn with seed + 1: independent of the valid draw


def stack_queries(
    events: dict[str, np.ndarray], valid: pd.DataFrame, n_users: int, seed: int, cuts: int = 1
) -> pd.DataFrame:
    """Level-2 training queries: the last `cuts` clicks of up to `n_users` training users outside the local
    validation users (same columns as valid_targets; by user, then time). Every model that produces level-1
    scores for them trains on `before_cuts` of both sets (from a user's earliest cut on), so neither their
    targets nor the valid targets leak; each query's history is its events before its own cut."""
    last = last_clicks(events, n_users, seed + STACK_SEED_OFFSET, valid["user"].to_numpy())
    if cuts <= 1 or not len(last):
        return last
    user, action = events["user"], events["action"]
    users, start, _ = group_bounds(user)
    rows = []
    for g, pos in zip(
        np.searchsorted(users, last["user"].to_numpy()), last["event_index"].to_numpy(), strict=True
    ):
        clicks = start[g] + np.flatnonzero(action[start[g] : pos + 1] >= 1)
        rows.append(clicks[-cuts:])
    pos = np.concatenate(rows).astype(np.int64)
    g = np.searchsorted(users, user[pos])
    return pd.DataFrame(
        {
            "user": user[pos].astype(np.int64),
            "item": events["item"][pos].astype(np.int64),
            "action": action[pos].astype(np.int8),
            "n_hist": (pos - start[g]).astype(np.int64),
            "event_index": pos,
        }
    )


# ---- what each stage may learn from: the one rule for valid, the stacker's queries and the predict users ----
# The users scored at the end are the predict users: their histories are released inputs, their next click is
# hidden, and they are no training sequences. The local validation users are built like them (whole users held
# out): none of their events is a training sequence, count or pair, and their events before the target reach a
# model only as the predict users' histories do (with_histories: the stage learns from released query
# histories, predict and valid alike). Measured on the default MovieLens data before this rule: valid 0.2055 vs
# local test 0.1274 (issue 25); bench/README.md "Tencentgr local validation" has the figures after it. The
# stacker's training queries stay training users' held-out last clicks (their earlier events are training
# sequences, their target and what follows are not), so the level-2 models learn from labels the level-1
# models never saw.
@dataclass(frozen=True)
class HeldOut:
    """The held-out targets of a run: the local validation users' and the stacker's training queries'."""

    valid: pd.DataFrame  # valid_targets.parquet: one target per valid user (user, item, action, event_index)
    stack: pd.DataFrame  # stack_queries: training users' last clicks (same columns), never a valid user

    @staticmethod
    def of(
        events: dict[str, np.ndarray], valid: pd.DataFrame, n_stack: int, seed: int, cuts: int = 1
    ) -> HeldOut:
        return HeldOut(valid, stack_queries(events, valid, n_stack, seed, cuts))


FOLDS = (
    "valid",
    "test",
)  # valid: a fit that answers the stacker's and the valid queries; test: the predict users


def rows_before(user: np.ndarray, queries: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(rows, query): the event rows of each held-out query's history (its user's events before its
    `event_index`), queries in order, oldest first within one; and the query of each row."""
    users, start, _ = group_bounds(user)
    begin = start[np.searchsorted(users, queries["user"].to_numpy())]
    length = queries["event_index"].to_numpy().astype(np.int64) - begin
    offsets = np.r_[0, np.cumsum(length)].astype(np.int64)
    rows = np.repeat(begin - offsets[:-1], length) + np.arange(offsets[-1])
    return rows, np.repeat(np.arange(len(queries)), length)


def valid_histories(events: dict[str, np.ndarray], valid: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each valid user's events before its target, in the form of predict_events.parquet (same columns,
    grouped by user in valid order, time-ordered): the valid users' inference inputs."""
    rows, _ = rows_before(events["user"], valid)
    return {c: a[rows] for c, a in events.items()}


def training_mask(user: np.ndarray, held: HeldOut) -> np.ndarray:
    """(E,) bool over the training events: the training sequences of the valid fold. Every event of a valid
    user is out (whole users, as predict users are absent from training); a stacker query's user keeps its
    events before its first cut (before_cuts)."""
    keep = before_cuts(user, held.stack["event_index"].to_numpy().astype(np.int64))
    return keep & ~np.isin(user, held.valid["user"].to_numpy())


def query_inputs(
    events: dict[str, np.ndarray], predict_events: dict[str, np.ndarray], held: HeldOut, split: str
) -> dict[str, np.ndarray]:
    """The inference inputs of the `split` queries, grouped by user: valid = valid_histories, test = the
    predict users' histories. One form for both, so every stage answers them by the same code (the stacker's
    queries are cut out of the training events instead: histories_before)."""
    if split == "valid":
        return valid_histories(events, held.valid)
    if split == "test":
        return predict_events
    raise ValueError(f"query_inputs: split {split!r}; expected valid or test")


def fit_events(
    events: dict[str, np.ndarray],
    predict_events: dict[str, np.ndarray],
    held: HeldOut,
    fold: str,
    with_histories: bool,
) -> dict[str, np.ndarray]:
    """The events a model may learn from to answer the queries of `fold`, grouped by user (runs of one user
    contiguous; a user may have a training run and a history run). `valid` (the stacker's and the valid
    queries): training_mask's events; `test` (the predict users): every training event but the valid targets
    and what follows them (so that no model ever learns from a valid target). with_histories adds
    the released query histories as the stage uses them, in the same way for both folds: the predict users'
    histories to either fold, the valid users' histories to the valid fold. No stage derives this itself."""
    if fold not in FOLDS:
        raise ValueError(f"fit_events: fold {fold!r}; expected one of {FOLDS}")
    keep = (
        before_cuts(events["user"], held.valid["event_index"].to_numpy().astype(np.int64))
        if fold == "test"
        else training_mask(events["user"], held)
    )
    parts = [{c: a[keep] for c, a in events.items()}]
    if with_histories:
        if fold == "valid":
            parts.append(valid_histories(events, held.valid))
        parts.append({c: predict_events[c] for c in events})
    return {c: np.concatenate([p[c] for p in parts]) for c in events}


# ---- the seen-item policy (retrieve / seqrec / baseline `exclude_seen: auto`) ----------------------------
# `auto` keeps the items a user has already seen when at least this share of the training queries' targets
# (held-out next clicks) is an item of the query's own history. MovieLens: 0 (nobody rates a movie twice;
# leaving seen items out doubles co-visitation's valid score there, bench/README.md "Seen-item policy"); the
# synthetic data: 0.66. A judgment, not tuned (only those two shares were at hand): at 10% the repeat targets
# alone should be worth more than the top-10 slots the seen items take from new ones, since the fusion weights
# and the reranker (which reads the history source's score and rank, retrieve/history.py) learn how far to
# trust them
REPEAT_SHARE_KEEP = 0.1


@dataclass(frozen=True)
class SeenPolicy:
    exclude: bool  # leave each query's history items out of its ranking
    figures: dict[str, Any]  # the setting, the decision, the repeat shares it was decided from


def seen_setting(value: Any, key: str = "exclude_seen") -> str:
    """A config's exclude_seen (auto | true | false; YAML booleans arrive as 'True' / 'False') normalised."""
    s = str(value).strip().lower()
    if s not in SEEN_SETTINGS:
        raise ValueError(f"'{key}' is {value!r}; expected one of {', '.join(SEEN_SETTINGS)}")
    return s


def repeat_shares(events: dict[str, np.ndarray], queries: pd.DataFrame) -> dict[str, Any]:
    """Of the held-out `queries` (user, item, event_index as stack_queries gives them), the share whose
    target item occurs in the query's own history before it: with any action, as a click or conversion,
    and within the last 10 events; and the mean number of history events per query."""
    n_q = len(queries)
    if n_q == 0:
        return {"queries": 0, "repeat_share": None, "repeat_click_share": None, "repeat_last10_share": None}
    rows, q = rows_before(events["user"], queries)
    hit = events["item"][rows] == queries["item"].to_numpy()[q]
    age = queries["event_index"].to_numpy().astype(np.int64)[q] - rows  # 1 = the event just before the target
    length = np.bincount(q, minlength=n_q)

    def share(mask: np.ndarray) -> float:
        return round(float((np.bincount(q[mask], minlength=n_q) > 0).mean()), 5)

    return {
        "queries": n_q,
        "repeat_share": share(hit),
        "repeat_click_share": share(hit & (events["action"][rows] >= 1)),
        "repeat_last10_share": share(hit & (age <= 10)),
        "mean_history": round(float(length.mean()), 1),
    }


def seen_policy(setting: Any, events: dict[str, np.ndarray], queries: pd.DataFrame) -> SeenPolicy:
    """Whether to leave seen items out, for `setting` true / false / auto. auto decides from the training
    queries only (stack_queries: users outside the valid users, so no valid target is read): keep seen items
    when at least REPEAT_SHARE_KEEP of their targets repeat an item of their own history (any action).
    The stages read prepare's shares of the same queries instead (read_seen_policy): one decision."""
    return decide_seen(setting, repeat_shares(events, queries) if seen_setting(setting) == "auto" else {})


def read_seen_policy(prep: str | Path, setting: Any) -> SeenPolicy:
    """seen_policy for `setting` from the shares prepare wrote (PreparedTGR.SEEN) of its stack queries."""
    s = seen_setting(setting)
    return decide_seen(s, json.loads((Path(prep) / PreparedTGR.SEEN).read_text()) if s == "auto" else {})


def read_held_out(prep: str | Path) -> HeldOut:
    """The run's held-out targets as prepare wrote them: the valid users' and the stacker's queries."""
    return HeldOut(read_table(prep, PreparedTGR.VALID), read_table(prep, PreparedTGR.STACK_QUERIES))


def decide_seen(setting: Any, fig: dict[str, Any]) -> SeenPolicy:
    """The decision of seen_policy from the queries' repeat shares `fig` (unused unless setting is auto)."""
    s = seen_setting(setting)
    fig = fig if s == "auto" else {}
    if s != "auto":
        exclude, why = s == "true", "set in the config"
    elif not fig["queries"]:
        exclude, why = True, "no training queries to decide from (data.stack_users): seen items left out"
    else:
        exclude = fig["repeat_share"] < REPEAT_SHARE_KEEP
        why = (
            f"{fig['repeat_share']:.1%} of {fig['queries']} training targets repeat a history item "
            f"({'<' if exclude else '>='} {REPEAT_SHARE_KEEP:.0%})"
        )
    return SeenPolicy(
        exclude, {"setting": s, "exclude_seen": exclude, "threshold": REPEAT_SHARE_KEEP, "reason": why, **fig}
    )
