"""`seqrec`: the generative sequence retriever of the tencentgr track (models/seqrec.py, train/seqrec.py).

Trains next-item on the valid fold's events (tgr_prepared.fit_events: the valid users held out whole, as the
predict users are; their histories and the predict users' train too with seqrec.train_predict), answers the
valid and the predict users from their histories alike (query_inputs), selects the step by the valid score, then searches the candidate pool's item
vectors with each query's user vector through retrieve/index.py (FAISS), the user's seen items left out
(seqrec.exclude_seen). Writes (names in paths.Predictions / paths.Seqrec):
    predictions.parquet  ranking table (data/predictions.ranking_table), top seqrec.topk per query: split
                         train = the stacker's queries (HeldOut.stack) in order, valid = valid_targets rows, test =
                         predict_users rows (histories from predict_events.parquet)
    metrics.json         valid score, HR@10, NDCG@10, weighted score; best step, samples/s
    curve.csv            one row per evaluation
    model.pt             best weights
An interrupted run resumes from its last evaluation (Paths.resume_dir("seqrec")).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf

from recstack.artifacts import atomic_path, stable_hash, write_json, write_table, write_text
from recstack.data.tables.predictions import ranking_table
from recstack.data.tables.ranking import read_matrix
from recstack.data.tables.tgr_prepared import (
    group_bounds,
    pool_items,
    query_inputs,
    read_events,
    read_held_out,
    read_mm,
    read_seen_policy,
    read_table,
    training_mask,
)
from recstack.errors import DataError
from recstack.metrics import tencentgr_score
from recstack.models.item_encoder import ItemColumns, ItemEncoder
from recstack.models.seqrec import SeqRec, UserTower
from recstack.paths import MANIFEST, Predictions, PreparedTGR, Seqrec
from recstack.retrieve.base import backfill
from recstack.retrieve.index import IndexSettings, VectorIndex, search_excluding
from recstack.stages.context import StageContext
from recstack.tasks import ACTION_WEIGHTS, TGR_K, mm_widths
from recstack.train import dist
from recstack.train.seqrec import (
    EventStore,
    SeqTrainSettings,
    Windows,
    encode_items,
    encode_queries,
    fit,
    query_windows,
    sampling_rates,
    seen_lists,
    train_windows,
)

log = logging.getLogger(__name__)


def codes(x: np.ndarray) -> np.ndarray:
    """Compact codes of a sparse feature column: 0 stays missing, other values -> 1..distinct."""
    vals = np.unique(x[x != 0])
    return np.where(x != 0, np.searchsorted(vals, x) + 1, 0).astype(np.int64)


def array_codes(col: pa.ChunkedArray, width: int) -> np.ndarray:
    """A list<int> column -> (rows, width) compact codes of each row's first `width` values, 0-padded."""
    arr = col.combine_chunks()
    off = arr.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(off)
    values = codes(arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64))
    pos = np.arange(len(values)) - np.repeat(off[:-1], lengths)  # place within its row
    row = np.repeat(np.arange(len(arr)), lengths)
    out = np.zeros((len(arr), width), np.int64)
    keep = pos < width
    out[row[keep], pos[keep]] = values[keep]
    return out


def multimodal(ctx: StageContext, n: int) -> tuple[dict[str, np.ndarray], str]:
    """Frozen item matrices (row == item re-id) for the item encoder by name, and where they came from."""
    sc, prep = ctx.cfg.seqrec, ctx.input_dir("prepare")
    embed_done = (ctx.input_dir("embed") / MANIFEST).is_file()
    vectors = ctx.embedded_items()  # None where no item has a vector
    if sc.multimodal == "embed" and vectors is None:
        why = (
            "found no item vector (its log says why)"
            if embed_done
            else "has not finished: run `./run.sh embed`"
        )
        raise DataError(f"seqrec.multimodal=embed but the embed stage {why}")
    if vectors is not None and sc.multimodal in ("embed", "auto"):
        return {"embed": read_matrix(vectors, n)}, "embed"
    if sc.multimodal == "none" or (sc.multimodal == "auto" and embed_done):  # auto: embed found no vector at
        return {}, "none"  # all, provided ones included
    dims = mm_widths(ctx.cfg.data.emb_dims)
    mats = {f"emb_{f}": np.array(read_mm(prep, f, n, int(dims[f]))[0]) for f in ctx.cfg.data.mm_feats}
    return mats, "provided:" + ",".join(ctx.cfg.data.mm_feats) if mats else "none"


def item_side(
    ctx: StageContext, trained_items: np.ndarray
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """id index (0 = unseen in training), compact codes of each item sparse feature column by name, and the
    number of item rows."""
    table = pq.read_table(ctx.input_dir("prepare") / PreparedTGR.ITEMS)
    n = table.num_rows
    if not np.array_equal(table.column("item").to_numpy(), np.arange(n)):
        raise DataError(f"{ctx.input_dir('prepare') / PreparedTGR.ITEMS}: column 'item' is not 0..{n - 1}")
    skip = {f"i{f}" for f in ctx.cfg.seqrec.skip_item_feats}
    cols = [c for c in table.column_names if c.startswith("i") and c[1:].isdigit() and c not in skip]
    feats = {c: codes(table.column(c).to_numpy().astype(np.int64)) for c in cols}
    # a feature this data set never sets carries nothing
    used = {c: torch.from_numpy(f) for c, f in feats.items() if f.any()}
    return torch.from_numpy(id_index_of(trained_items, n)), used, n


def id_index_of(trained_items: np.ndarray, n: int) -> np.ndarray:
    """(n,) id-embedding row of each item: 1.. for the items seen in training, 0 (the zero row) otherwise."""
    seen = np.zeros(n, bool)
    seen[trained_items] = True
    seen[0] = False
    return np.where(seen, np.cumsum(seen), 0)


def negative_rates(
    trained: np.ndarray, trained_action: np.ndarray, pool: np.ndarray, n_items: int, uniform_mix: float
) -> tuple[np.ndarray, np.ndarray]:
    """(popularity, rates), each (n_items,): the targets' weighted popularity and the shared negatives'
    sampling distribution (train.seqrec.sampling_rates) over the trained and pool items."""
    weight = np.array([ACTION_WEIGHTS[a] for a in range(max(ACTION_WEIGHTS) + 1)])[trained_action]
    counts = np.bincount(trained, weights=weight, minlength=n_items)
    eligible = np.zeros(n_items, bool)
    eligible[trained] = True
    eligible[pool] = True
    eligible[0] = False
    return counts / max(counts.sum(), 1e-12), sampling_rates(counts, eligible.astype(np.float64), uniform_mix)


def build_model(
    sc: Any, cols: ItemColumns, u_sparse: torch.Tensor, u_arrays: torch.Tensor, device: torch.device
) -> SeqRec:
    """The shared item encoder, projected to one vector (id | sparse features | each matrix, kept float16),
    under the user tower and the transformer, sized by the seqrec config `sc`."""
    items = ItemEncoder(cols, sc.dim, "project", sc.emb_std, sc.id_dropout)
    return SeqRec(
        items,
        UserTower(u_sparse, u_arrays, sc.dim, sc.emb_std),
        sc.dim,
        sc.layers,
        sc.heads,
        sc.max_len,
        sc.dropout,
        sc.next_action,
        sc.emb_std,
    ).to(device)


def user_side(ctx: StageContext) -> tuple[torch.Tensor, torch.Tensor, int]:
    table = pq.read_table(ctx.input_dir("prepare") / PreparedTGR.USERS)
    sparse = [
        codes(table.column(c).to_numpy().astype(np.int64))
        for c in table.column_names
        if c.startswith("u") and c[1:].isdigit() and pa.types.is_integer(table.schema.field(c).type)
    ]
    arrays = [
        array_codes(table.column(c), ctx.cfg.seqrec.user_array_len)
        for c in table.column_names
        if c.startswith("u") and c[1:].isdigit() and pa.types.is_list(table.schema.field(c).type)
    ]
    n = table.num_rows
    s = np.stack(sparse, 1) if sparse else np.zeros((n, 0), np.int64)
    a = np.stack(arrays, 1) if arrays else np.zeros((n, 0, 1), np.int64)
    return torch.from_numpy(s), torch.from_numpy(a), n


def history_windows(
    run_users: np.ndarray,
    run_start: np.ndarray,
    run_end: np.ndarray,
    wanted: np.ndarray,
    n_users: int,
    device: torch.device,
) -> Windows:
    """One query window per user of `wanted`: its run [start, end) of the store (empty where it has none), for
    the valid and the predict users alike (their histories are query_inputs' runs)."""
    where = {int(u): (a, b) for u, a, b in zip(run_users, run_start, run_end, strict=True)}
    bounds = np.array([where.get(int(u), (0, 0)) for u in wanted.tolist()], np.int64).reshape(-1, 2)
    return query_windows(bounds[:, 0], bounds[:, 1], profile_rows(wanted, n_users), device)


def profile_rows(user: np.ndarray, n_users: int) -> np.ndarray:
    """users.parquet row of each user id (0 = no profile: a cold-start predict user)."""
    return np.where((user >= 1) & (user < n_users), user, 0).astype(np.int64)


def settings(ctx: StageContext, key: str, exclude_seen: bool) -> SeqTrainSettings:
    return SeqTrainSettings(
        OmegaConf.to_object(ctx.cfg.seqrec),
        exclude_seen=exclude_seen,
        seed=ctx.cfg.seed + ctx.cfg.seqrec.seed_offset,
        resume=ctx.paths.resume_dir("seqrec") / Seqrec.RESUME,
        resume_key=key,
    )


def run(ctx: StageContext) -> dict[str, Any]:
    before = torch.get_num_threads()
    if ctx.cfg.seqrec.threads > 0:  # why 1 by default: config.SeqrecConfig.threads
        torch.set_num_threads(ctx.cfg.seqrec.threads)
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(before)  # the next stage in this process gets its threads back


@dataclass
class _Data:
    """The stage's inputs on the device: one event store (the training events, then the valid users' and the
    predict users' histories), the training windows, the query windows of valid and test, the item and user
    sides of the model."""

    held: Any  # tgr_prepared.HeldOut
    pu: pd.DataFrame
    users: np.ndarray  # group_bounds of the training events
    start: np.ndarray
    n_users: int
    n_items: int
    kept: int  # training events kept (training_mask)
    extra: bool  # the released histories train too (seqrec.train_predict)
    trained: np.ndarray  # item of every trained event
    trained_action: np.ndarray
    cols: ItemColumns
    u_sparse: torch.Tensor
    u_arrays: torch.Tensor
    mm_source: str
    store: EventStore
    train: Windows
    q_win: dict[str, Windows]


def _data(ctx: StageContext, device: torch.device) -> _Data:
    sc, prep = ctx.cfg.seqrec, ctx.input_dir("prepare")
    ev = read_events(prep)
    pe = read_events(prep, predict=True)
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    held = read_held_out(prep)
    valid = held.valid
    # one store: the training events, then the valid users' and the predict users' histories (query_inputs:
    # the same form for both). Training sequences are tgr_prepared.fit_events(fold="valid") laid out as
    # windows: the training events of training_mask (a prefix of each user's run: nothing of a valid user,
    # a stacker query's user up to its first cut), plus with seqrec.train_predict both users' histories
    keep = training_mask(ev["user"], held)
    users, start, end = group_bounds(ev["user"])
    train_end = start + np.add.reduceat(keep.astype(np.int64), start) if len(start) else end  # kept = prefix
    inputs = {"valid": query_inputs(ev, pe, held, "valid"), "test": query_inputs(ev, pe, held, "test")}
    extra = sc.train_predict and any(len(p["item"]) for p in inputs.values())
    trained = np.concatenate([ev["item"][keep], *(p["item"] for p in inputs.values() if extra)])
    trained_action = np.concatenate([ev["action"][keep], *(p["action"] for p in inputs.values() if extra)])
    id_index, feats, n_items = item_side(ctx, trained)
    u_sparse, u_arrays, n_users = user_side(ctx)
    mats, mm_source = multimodal(ctx, n_items)
    store = EventStore.of(ev["user"], ev["item"], ev["action"], ev["ts"], device)
    train = train_windows(start, train_end, profile_rows(users, n_users), sc.max_len, device)
    q_win: dict[str, Windows] = {}
    off = len(ev["item"])
    for split, part, who in (("valid", inputs["valid"], valid["user"]), ("test", inputs["test"], pu["user"])):
        store = EventStore.cat(
            store, EventStore.of(part["user"], part["item"], part["action"], part["ts"], device)
        )
        p_users, p_start, p_end = group_bounds(part["user"])
        if extra:  # released histories train next-item too (their targets are never given)
            train = Windows.cat(
                train,
                train_windows(p_start + off, p_end + off, profile_rows(p_users, n_users), sc.max_len, device),
            )
        q_win[split] = history_windows(p_users, p_start + off, p_end + off, who.to_numpy(), n_users, device)
        off += len(part["item"])
    cols = ItemColumns(id_index, sparse=feats, multimodal={k: torch.from_numpy(m) for k, m in mats.items()})
    return _Data(
        held,
        pu,
        users,
        start,
        n_users,
        n_items,
        int(keep.sum()),
        bool(extra),
        trained,
        trained_action,
        cols,
        u_sparse,
        u_arrays,
        mm_source,
        store,
        train,
        q_win,
    )


def _run(ctx: StageContext) -> dict[str, Any]:
    cfg, sc, prep = ctx.cfg, ctx.cfg.seqrec, ctx.input_dir("prepare")
    device = dist.resolve_device(cfg.device)
    torch.manual_seed(cfg.seed + sc.seed_offset)  # the model's initialisation
    d = _data(ctx, device)
    valid = d.held.valid
    pool = pool_items(prep)
    popularity, rates = negative_rates(d.trained, d.trained_action, pool, d.n_items, sc.uniform_mix)
    model = build_model(sc, d.cols, d.u_sparse, d.u_arrays, device)
    prepare_key = json.loads((prep / MANIFEST).read_text())["key"]
    key = stable_hash(
        {
            "seqrec": OmegaConf.to_container(sc),
            "seed": cfg.seed,
            "prepare": prepare_key,
            "multimodal": d.mm_source,
            "valid": int(cfg.data.valid_users),
            "stack": int(cfg.data.stack_users),
            "cuts": int(cfg.data.stack_cuts),
            "folds": "whole valid users",
        }
    )
    # seen items left out or kept (seqrec.exclude_seen; auto: tgr_prepared.seen_policy, decided from these
    # stacker queries as the retrieve stage decides): a bool for the training and the search below
    policy = read_seen_policy(prep, sc.exclude_seen)
    s = settings(ctx, key, policy.exclude)
    log.info("seqrec: seen items %s (%s)", "left out" if s.exclude_seen else "kept", policy.figures["reason"])
    v_win = d.q_win["valid"]
    log.info(
        "seqrec on %s: %d training windows over %d events (%d users), %d valid queries, pool %d, "
        "multimodal=%s, loss=%s",
        device,
        len(d.train),
        d.kept,
        len(d.users),
        len(v_win),
        len(pool),
        d.mm_source,
        sc.loss,
    )
    pool_t = torch.from_numpy(pool).to(device)
    result = fit(
        model,
        d.store,
        d.train,
        v_win,
        valid["item"].to_numpy(),
        valid["action"].to_numpy(),
        pool_t,
        popularity,
        rates,
        s,
    )
    parts = _search(ctx, model, d, pool, pool_t, s.exclude_seen, device)
    figures = _figures(ctx, model, d, result, parts, len(pool), s.exclude_seen, device)
    write_table(ctx.out / Predictions.FILE, ranking_table(parts))
    write_json(ctx.out / Seqrec.METRICS, figures)
    write_text(ctx.out / Seqrec.CURVE, pd.DataFrame(result.curve).to_csv(index=False))
    with atomic_path(ctx.out / Seqrec.MODEL) as tmp:
        torch.save(model.state_dict(), tmp)
    shutil.rmtree(ctx.paths.resume_dir("seqrec"), ignore_errors=True)  # finished: nothing left to resume
    log.info(
        "seqrec (%s) valid score %.4f (HR@10 %.4f, NDCG@10 %.4f), best step %d",
        sc.loss,
        figures["valid_score"],
        figures["valid_hr@10"],
        figures["valid_ndcg@10"],
        result.best_step,
    )
    return figures


def _search(
    ctx: StageContext,
    model: SeqRec,
    d: _Data,
    pool: np.ndarray,
    pool_t: torch.Tensor,
    exclude_seen: bool,
    device: torch.device,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The top seqrec.topk of the pool per query of each split: the user vector at the last position
    searches the pool's item vectors (cosine; for the bce recipe's dot product the item vectors get one
    extra coordinate so cosine ranks as dot: MIPS), the user's seen items left out when excluded."""
    cfg, sc = ctx.cfg, ctx.cfg.seqrec
    item_vec = encode_items(model, pool_t).cpu().numpy()
    index = VectorIndex(
        mips(item_vec) if sc.loss == "bce" else item_vec,
        IndexSettings(factory=sc.index, nprobe=sc.nprobe, device=cfg.device),
        ids=pool,
        seed=cfg.seed,
    )
    k = min(sc.topk, len(pool))
    parts = {}
    for split, w in (
        ("train", _stack_windows(d, device)),
        ("valid", d.q_win["valid"]),
        ("test", d.q_win["test"]),
    ):
        q = encode_queries(model, d.store, w, sc.max_len).cpu().numpy()
        q = np.pad(q, ((0, 0), (0, 1))) if sc.loss == "bce" else q
        seen = seen_lists(d.store, w) if exclude_seen else None
        scores, top = search_excluding(index, q, k, seen) if len(q) else (np.zeros((0, k)), np.zeros((0, k)))
        parts[split] = fill_seen(index, q, top, scores)
    return parts


def _stack_windows(d: _Data, device: torch.device) -> Windows:
    """The stacker's queries: each one's user's events before its cut (train split of the predictions)."""
    q = d.held.stack
    g = np.searchsorted(d.users, q["user"].to_numpy())
    return query_windows(d.start[g], q["event_index"].to_numpy(), profile_rows(d.users[g], d.n_users), device)


def _figures(
    ctx: StageContext,
    model: SeqRec,
    d: _Data,
    result: Any,
    parts: dict[str, Any],
    pool: int,
    exclude_seen: bool,
    device: torch.device,
) -> dict[str, Any]:
    valid, sc = d.held.valid, ctx.cfg.seqrec
    m = tencentgr_score(
        parts["valid"][0][:, :TGR_K],
        valid["item"].to_numpy(),
        k=TGR_K,
        action=valid["action"].to_numpy(),
        action_weights=ACTION_WEIGHTS,
    )
    curve = pd.DataFrame(result.curve)
    figures: dict[str, Any] = {f"valid_{k_}": round(float(v), 5) for k_, v in m.items()}
    figures |= {
        "loss": sc.loss,
        "multimodal": d.mm_source,
        "device": str(device),
        "best_step": result.best_step,
        "steps_planned": result.steps,
        "steps_run": int(curve["step"].max()) if len(curve) else 0,
        "train_samples_per_s": round(float(curve["samples_per_s"].mean()), 1) if len(curve) else 0.0,
        "params": sum(p.numel() for p in model.parameters()),
        "train_windows": len(d.train),
        "train_predict": d.extra,
        "queries": {s_: len(parts[s_][0]) for s_ in parts},
        "pool": pool,
        "exclude_seen": exclude_seen,
    }
    return figures


def fill_seen(
    index: VectorIndex, q: np.ndarray, top: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A user who has seen nearly the whole pool gets fewer than k unseen items (id -1): fill the rest
    with the best seen ones (as the popularity baseline does), so every row holds k distinct pool items.
    The fill is retrieve.base.backfill (the one top-k with backfill) over an unfiltered search; a filled
    slot's score is that search's score of the item."""
    short = np.flatnonzero((top < 0).any(1))
    if len(short):
        k = top.shape[1]
        s_all, i_all = index.search(q[short], k)  # (S, k) each, seen items included
        items, filled = backfill(top[short], k, fallback=i_all)  # (S, k)
        hit = i_all[:, None, :] == items[:, :, None]  # (S, k, k): where each listed item sits in the search
        fill_scores = np.take_along_axis(s_all, hit.argmax(2), 1)  # (S, k)
        top[short] = items
        scores[short] = np.where(filled & hit.any(2), fill_scores, scores[short])
    return top, scores


def mips(x: np.ndarray) -> np.ndarray:
    """Items for maximum inner product search through a cosine index (Bachrach et al. 2014): append
    sqrt(M^2 - |x|^2) so every row has norm M; a query padded with 0 then ranks by q.x."""
    norm2 = (x.astype(np.float64) ** 2).sum(1)
    return np.c_[x, np.sqrt(np.maximum(norm2.max() - norm2, 0))].astype(np.float32)
