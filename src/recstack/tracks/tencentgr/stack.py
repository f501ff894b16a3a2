"""`stack` for tencentgr: LightGBM lambdarank over the retrieve stage's merged candidates, trained on the
stacker's training queries (held-out last clicks of training users outside the valid users), trees chosen by
CV over those queries, the CV models averaged with the refitted one (stack.rerank.bag); the valid users are
scored once and never fitted. Its top `stack.rerank.topk` per user is a ranking the ensemble can use."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recstack.artifacts import write_json, write_table
from recstack.data.raw.progress import peak_rss_gib
from recstack.data.tables.predictions import ranking_table
from recstack.data.tables.tgr_prepared import (
    HeldOut,
    fit_events,
    histories,
    histories_before,
    pool_items,
    query_inputs,
    read_events,
    read_table,
)
from recstack.errors import DataError
from recstack.metrics import tencentgr_score
from recstack.models.popularity import DAY
from recstack.paths import Predictions, PreparedTGR, Retrieved, Stacked
from recstack.retrieve.base import Events, backfill, top_k_groups
from recstack.retrieve.covisit import CovisitMatrix, read_matrix
from recstack.retrieve.features import covisit_lookup
from recstack.stack.features import (
    feature_match,
    history_features,
    history_pair_sums,
    history_similarity,
    item_stats,
    popularity_taste,
    source_agreement,
    user_normalised,
    user_standardised,
    windowed_popularity,
)
from recstack.stack.lgbm import fit_lambdarank
from recstack.stages.context import StageContext
from recstack.tasks import TGR_K

log = logging.getLogger(__name__)


CAND_KEYS = ("split", "user_row", "user", "item", "n_sources", "label")


def candidate_sources(columns: list[str]) -> list[str]:
    """Sources named by the candidates' `<s>_score` / `<s>_rank` column pairs, in column order."""
    return [
        c[: -len("_score")]
        for c in columns
        if c.endswith("_score") and f"{c[: -len('_score')]}_rank" in columns
    ]


STACK_CHUNK = 10_000  # test queries featurised and scored at a time: their candidates are never held whole


def candidate_schema(path, n_queries: dict[str, int] | None = None) -> list[str]:
    """The sources of the retrieve stage's candidates (paths.Retrieved.CANDIDATES), its columns, split values
    and (given each split's number of queries) user rows checked against the contract, reading only those two
    columns a batch at a time (the table is ~93M rows at TencentGR-1M size)."""
    if not path.is_file():
        raise DataError(f"{path}: not found; the tencentgr stack reranks the retrieve stage's candidates")
    f = pq.ParquetFile(path)
    columns = f.schema_arrow.names
    missing = [c for c in CAND_KEYS if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(CAND_KEYS)} "
            "and <source>_score / <source>_rank per source"
        )
    sources = candidate_sources(columns)
    if not sources:
        raise DataError(f"{path}: no <source>_score / <source>_rank column pair")
    for batch in f.iter_batches(columns=["split", "user_row"], batch_size=1 << 20):
        b = batch.to_pandas()
        bad = sorted(set(b["split"].unique()) - {"train", "valid", "test"})
        if bad:
            raise DataError(f"{path}: column 'split' has {bad[0]!r}; expected train, valid or test")
        for split, rows in b.groupby("split")["user_row"] if n_queries is not None else ():
            if rows.min() < 0 or rows.max() >= n_queries[split]:
                raise DataError(
                    f"{path}: split {split} has user_row {rows.min() if rows.min() < 0 else rows.max()}; "
                    f"the split has {n_queries[split]} queries"
                )
    return sources


def read_candidates(path, split: str, rows: tuple[int, int] | None = None) -> pd.DataFrame:
    """One split's candidates (of queries rows[0]..rows[1]-1 when given), by (user_row, item), each pair
    once. The row filter skips row groups by their statistics (retrieve writes the test queries' candidates
    TEST_CHUNK queries per row group)."""
    where = [("split", "==", split)]
    if rows is not None:
        where += [("user_row", ">=", rows[0]), ("user_row", "<", rows[1])]
    df = pq.read_table(path, filters=where).to_pandas()
    df = df.sort_values(["user_row", "item"], kind="stable").reset_index(drop=True)
    dup = (df["user_row"].to_numpy()[1:] == df["user_row"].to_numpy()[:-1]) & (
        df["item"].to_numpy()[1:] == df["item"].to_numpy()[:-1]
    )
    if dup.any():
        r = int(np.flatnonzero(dup)[0]) + 1
        raise DataError(
            f"{path}: split {split} repeats (user_row, item) ({df['user_row'].iat[r]}, {df['item'].iat[r]})"
        )
    return df


def _seen_counts(hist: list[np.ndarray]) -> pd.Series:
    """How often each query's history holds each item: a (query, item) -> count Series."""
    seen = pd.DataFrame(
        {
            "q": np.repeat(np.arange(len(hist)), [len(h) for h in hist]),
            "item": np.concatenate(hist) if hist else np.zeros(0, np.int64),
        }
    )
    return seen.groupby(["q", "item"]).size()


def _rows_features(
    part: pd.DataFrame,
    sources: list[str],
    stats: pd.DataFrame,
    hist: list[np.ndarray],
    n_hist: np.ndarray,
    counts: pd.Series,
    emb: np.ndarray | None,
    recent: int,
) -> pd.DataFrame:
    q = part["user_row"].to_numpy()
    item = part["item"].to_numpy()
    x = {}
    for s in sources:
        x[f"{s}_score"] = part[f"{s}_score"].to_numpy(np.float32)
        r = part[f"{s}_rank"].to_numpy()
        x[f"{s}_rank"] = np.where(r >= 0, r, np.nan).astype(np.float32)  # -1: not proposed -> missing
    x["n_sources"] = part["n_sources"].to_numpy(np.float32)
    x |= {c: stats[c].to_numpy()[item] for c in stats.columns}
    x["n_hist"] = n_hist[q].astype(np.float32)
    x["seen_count"] = (
        counts.reindex(pd.MultiIndex.from_arrays([q, item])).fillna(0).to_numpy(np.float32)
        if len(counts)
        else np.zeros(len(q), np.float32)
    )
    if emb is not None:
        x |= history_similarity(emb, hist, q, item, recent)
    return pd.DataFrame(x)


@dataclass(frozen=True)
class Context:
    """What the rich features of one split read besides its candidates (RerankConfig.rich_features)."""

    events: Events  # the valid fold's clicks (tgr_prepared.fit_events): popularity as of each query's time
    covisit: CovisitMatrix  # the retrieve stage's co-visitation of the split's own events (its npz files)
    codes: np.ndarray  # (items, C) item sparse features, 0 = none
    code_names: list[str]
    hist_ts: list[np.ndarray]  # each query's history timestamps (the last one is the query's time)


def _rich_features(
    part: pd.DataFrame,
    sources: list[str],
    hist: list[np.ndarray],
    c: Context,
    emb: np.ndarray | None,
    rc: Any,
) -> dict[str, np.ndarray]:
    """Per-query normalised source scores, popularity as of the query's time, co-visitation with the last
    1 / 3 / 5 / 10 items, item-feature match with the history, longer-history similarity, user activity."""
    q, item = part["user_row"].to_numpy(), part["item"].to_numpy()
    q_time = np.array([t[-1] if len(t) else np.nan for t in c.hist_ts], np.float64)
    x = user_normalised(part, [f"{s}_score" for s in sources])
    x |= windowed_popularity(
        c.events.item, c.events.action, c.events.ts, q_time, q, item, tuple(float(w) for w in rc.windows_days)
    )
    x |= history_pair_sums(
        hist,
        q,
        item,
        lambda a, b: covisit_lookup(c.covisit, a, b),
        tuple(int(n) for n in rc.covisit_lasts),
        "covisit",
    )
    x |= feature_match(c.codes, c.code_names, hist, q, item, rc.history)
    if emb is not None:
        long = history_similarity(emb, hist, q, item, rc.long_history)
        x[f"sim_mean{rc.long_history}"], x[f"sim_max{rc.long_history}"] = long["sim_mean"], long["sim_max"]
    span = np.array([(t[-1] - t[0]) / DAY if len(t) else np.nan for t in c.hist_ts], np.float32)
    gap = np.array([(t[-1] - t[-2]) / DAY if len(t) > 1 else np.nan for t in c.hist_ts], np.float32)
    x["user_span_days"], x["user_gap_days"] = span[q], gap[q]
    return x


def prune(part: pd.DataFrame, sources: list[str], depth: int) -> pd.DataFrame:
    """The candidates some source ranks above `depth` (0: all). Deeper ones are almost never the target
    (MovieLens valid: recall 0.83 within rank 100 of any source vs 0.98 for all 814 per user) and are most
    of the rows the ranker learns to push down."""
    if depth <= 0 or not len(part):
        return part
    ranks = part[[f"{s}_rank" for s in sources]].to_numpy()
    best = np.where(ranks >= 0, ranks, np.iinfo(np.int32).max).min(1)
    return part[best < depth].reset_index(drop=True)


def _topk_raw(
    user_row: np.ndarray, item: np.ndarray, score: np.ndarray, n_users: int, k: int, fill: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(U, k) items by descending score per user (ties: lower item first); users short of k get the next
    `fill` items they lack (retrieve.base.backfill), their scores NaN (see `_below`)."""
    top = top_k_groups(user_row, item, score, n_users, k, np.float64)
    items, _ = backfill(top.items, k, shared=fill)
    return items, top.scores


def _below(scores: np.ndarray) -> np.ndarray:
    """NaN (padded) scores set below every scored item of the whole split."""
    lo = np.nanmin(scores) if (~np.isnan(scores)).any() else 0.0
    return np.where(np.isnan(scores), lo - 1.0, scores)


def _topk_matrix(
    user_row: np.ndarray, item: np.ndarray, score: np.ndarray, n_users: int, k: int, fill: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    items, scores = _topk_raw(user_row, item, score, n_users, k, fill)
    return items, _below(scores)


def source_topk(part: pd.DataFrame, source: str, n_users: int, k: int) -> np.ndarray:
    """(U, k) items in `source`'s own order (-1 where it proposed fewer)."""
    r = part[f"{source}_rank"].to_numpy()
    has = r >= 0
    items, _ = _topk_matrix(
        part["user_row"].to_numpy()[has],
        part["item"].to_numpy()[has],
        -r[has].astype(np.float64),
        n_users,
        k,
        np.zeros(0, np.int64),
    )
    return items


def _contexts(
    ctx: StageContext, fit: dict[str, np.ndarray], hist_ts: dict[str, list[np.ndarray]], n_rows: int
) -> Callable[[str], Context]:
    """Per split what the rich features read. The co-visitation matrices are the retrieve stage's, read from
    its folder (fitted there once): on the valid fold (tgr_prepared.fit_events) for the train and valid
    queries, on the test fold for the test queries. One
    matrix is held at a time (~2.8 GB each at TencentGR-1M size): the splits are asked for in that order."""
    click = fit["action"] >= 1  # windowed_popularity counts clicks only: the other events are dropped
    train = Events(fit["user"][click], fit["item"][click], fit["action"][click], fit["ts"][click])
    items = pq.read_table(ctx.input_dir("prepare") / PreparedTGR.ITEMS).to_pandas()
    names = [c for c in items.columns if c[:1] == "i" and c[1:].isdigit() and items[c].nunique() > 1]
    codes = items[names].to_numpy(np.int64) if names else np.zeros((len(items), 0), np.int64)
    del items
    held: dict[str, CovisitMatrix] = {}

    def context(split: str) -> Context:
        name = Retrieved.COVISIT_ALL if split == "test" else Retrieved.COVISIT_BEFORE
        if name not in held:
            held.clear()  # the other matrix goes first
            held[name] = read_matrix(ctx.input_dir("retrieve") / name, n_rows)
        return Context(train, held[name], codes, names, hist_ts[split])

    return context


@dataclass
class _Inputs:
    """What the reranker reads: the queries of each split, the candidates' sources, item statistics, each
    query's history (items, times, actions), the item matrix (memory-mapped), the pool's fill order."""

    path: Any  # the retrieve stage's candidates.parquet
    queries: dict[str, pd.DataFrame]
    sources: list[str]
    stats: pd.DataFrame
    hist_of: dict[str, dict[str, list[np.ndarray]]]
    emb: np.ndarray | None
    fill: np.ndarray
    k: int
    context: Callable[[str], Context] | None


def _read(ctx: StageContext) -> _Inputs:
    rc, prep, ret = ctx.cfg.stack.rerank, ctx.input_dir("prepare"), ctx.input_dir("retrieve")
    path = ret / Retrieved.CANDIDATES
    queries = {
        "train": read_table(prep, PreparedTGR.STACK_QUERIES),
        "valid": read_table(prep, PreparedTGR.VALID),
        "test": read_table(prep, PreparedTGR.PREDICT_USERS),
    }
    sources = candidate_schema(path, {s: len(q) for s, q in queries.items()})
    ev = read_events(prep)
    n_rows = pq.read_metadata(prep / PreparedTGR.ITEMS).num_rows
    pe = read_events(prep, predict=True)
    # item statistics from what a model answering the stacker's and the valid queries may learn from
    # (tgr_prepared.fit_events, fold "valid": the valid users held out whole), one fit for every split
    held_out = HeldOut(queries["valid"], queries["train"])  # the retrieve stage's stack_queries
    fit = fit_events(ev, pe, held_out, "valid", bool(rc.fit_histories))
    stats = item_stats(fit["item"], fit["action"], fit["ts"], n_rows, rc.half_life_days, rc.conversion_weight)
    # each query's history: the stacker's cut out of the training events; the valid and the predict users'
    # from query_inputs, the one form both take
    inputs = {s: query_inputs(ev, pe, held_out, s) for s in ("valid", "test")}
    hist_of = {
        c: {
            "train": histories_before(ev["user"], ev[c], queries["train"]),
            **{s: histories(inputs[s]["user"], inputs[s][c], queries[s]["user"].to_numpy()) for s in inputs},
        }
        for c in ("item", "ts", *(("action",) if rc.history_features else ()))
    }
    emb_path = ctx.embedded_items()
    # memory-mapped: the features gather a few rows per query from it (2.5 GB at TencentGR-1M size)
    emb = np.load(emb_path, mmap_mode="r") if emb_path is not None else None
    if emb is None:
        log.info("no item embeddings from the embed stage: no history-similarity features")
    elif emb.shape[0] != n_rows:
        raise DataError(f"{emb_path}: {emb.shape[0]} rows; expected {n_rows} (one per item re-id)")
    pool = pool_items(prep)
    fill = pool[np.argsort(-stats["pop_decay"].to_numpy()[pool], kind="stable")]  # pads short lists
    context = _contexts(ctx, fit, hist_of["ts"], n_rows) if rc.rich_features else None
    log.info(
        "reranker inputs read: %d train / %d valid / %d test queries, peak RSS %.2f GiB",
        len(queries["train"]),
        len(queries["valid"]),
        len(queries["test"]),
        peak_rss_gib(),
    )
    return _Inputs(path, queries, sources, stats, hist_of, emb, fill, min(rc.topk, len(pool)), context)


@dataclass
class _Featuriser:
    """A split's pruned candidates (all of them, read and pruned STACK_CHUNK queries at a time, or those of
    queries rows[0]..rows[1]-1) and their features (stack/features.py)."""

    rc: Any
    inp: _Inputs
    feat_sources: list[str]
    per_split: dict[str, tuple[np.ndarray, pd.Series]] = field(default_factory=dict)

    def pruned_rows(self, split: str, rows: tuple[int, int]) -> pd.DataFrame:
        return prune(read_candidates(self.inp.path, split, rows), self.inp.sources, self.rc.depth)

    def __call__(self, split: str, rows: tuple[int, int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        rc, inp = self.rc, self.inp
        hists, hist_of, stats, emb, feat_sources = (
            inp.hist_of["item"],
            inp.hist_of,
            inp.stats,
            inp.emb,
            self.feat_sources,
        )
        if rows is None:
            n_q = len(inp.queries[split])
            chunks = [
                self.pruned_rows(split, (c0, min(n_q, c0 + STACK_CHUNK)))
                for c0 in range(0, max(n_q, 1), STACK_CHUNK)
            ]
            part = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
        else:
            part = self.pruned_rows(split, rows)
        if split not in self.per_split:  # once per split, not per chunk of its queries
            self.per_split[split] = (
                np.array([len(h) for h in hists[split]], np.int64),
                _seen_counts(hists[split]),
            )
        n_hist, counts = self.per_split[split]
        feats = _rows_features(part, feat_sources, stats, hists[split], n_hist, counts, emb, rc.history)
        if rc.rich_features:
            feats = feats.assign(
                **_rich_features(part, feat_sources, hists[split], inp.context(split), emb, rc)
            )
        if rc.history_features:
            feats = feats.assign(
                **history_features(
                    hists[split],
                    hist_of["action"][split],
                    hist_of["ts"][split],
                    part["user_row"].to_numpy(),
                    part["item"].to_numpy(),
                )
            )
        if rc.agreement:
            feats = feats.assign(
                **source_agreement(part, feat_sources),
                **user_standardised(part, [f"{s}_score" for s in feat_sources]),
            )
        if rc.taste:
            feats = feats.assign(
                **popularity_taste(
                    stats["pop_clicks"].to_numpy(np.float64),
                    stats["pop_events"].to_numpy(np.float64),
                    hists[split],
                    part["user_row"].to_numpy(),
                    part["item"].to_numpy(),
                    rc.history,
                )
            )
        return part, feats


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, rc = ctx.cfg, ctx.cfg.stack.rerank
    inp = _read(ctx)
    queries, sources, k, fill = inp.queries, inp.sources, inp.k, inp.fill
    feat_sources = [s for s in sources if s not in rc.skip_sources]  # why skipped: config.RerankConfig
    if not feat_sources:
        raise DataError(
            f"stack.rerank.skip_sources {list(rc.skip_sources)} leaves none of the candidates' "
            f"sources {sources} as features"
        )
    featurised = _Featuriser(rc, inp, feat_sources)

    parts, x = {}, {}
    for split in ("train", "valid"):
        parts[split], x[split] = featurised(split)
        log.info(
            "%s candidates: %d rows x %d features, peak RSS %.2f GiB",
            split,
            len(parts[split]),
            x[split].shape[1],
            peak_rss_gib(),
        )
    train = parts["train"]
    if not len(train):
        raise DataError(
            f"{inp.path}: no split 'train' rows: the reranker trains on the "
            "stacker's queries (data.stack_users > 0)"
        )
    pos_weight = train.groupby("user_row")["label"].transform("max").to_numpy()
    has_target = pos_weight > 0  # queries whose target is not among the candidates teach a ranker nothing
    label = (train["label"].to_numpy() > 0).astype(np.int32)
    weight = pos_weight  # the contract's label is the target's metric weight: click 1, conversion 2.5
    model = fit_lambdarank(
        x["train"][has_target].reset_index(drop=True),
        label[has_target],
        train["user_row"].to_numpy()[has_target],
        weight[has_target],
        rc.lgbm,
        rc.folds,
        cfg.seed,
        rc.bag,
    )

    out = {}
    part = parts["valid"]
    score = model.predict(x["valid"]) if len(part) else np.zeros(0)
    out["valid"] = _topk_matrix(
        part["user_row"].to_numpy(), part["item"].to_numpy(), score, len(queries["valid"]), k, fill
    )
    # test queries STACK_CHUNK at a time (row-wise features, per-query top-k: the same as all at once)
    n_test, test_rows, tops = len(queries["test"]), 0, []
    for c0 in range(0, max(n_test, 1), STACK_CHUNK):
        c1 = min(n_test, c0 + STACK_CHUNK)
        part, feats = featurised("test", (c0, c1))
        score = model.predict(feats) if len(part) else np.zeros(0)
        tops.append(
            _topk_raw(part["user_row"].to_numpy() - c0, part["item"].to_numpy(), score, c1 - c0, k, fill)
        )
        test_rows += len(part)
        del part, feats
    out["test"] = (np.concatenate([t[0] for t in tops]), _below(np.concatenate([t[1] for t in tops])))
    figures = _figures(queries, sources, parts, out, model, has_target, list(x["train"].columns), test_rows)
    write_table(ctx.out / Predictions.FILE, ranking_table(out))
    write_json(ctx.out / Stacked.IMPORTANCE, {"gain": figures["gain"], "cv": model.cv})
    return figures


def _figures(
    queries: dict[str, pd.DataFrame],
    sources: list[str],
    parts: dict[str, pd.DataFrame],
    out: dict[str, Any],
    model: Any,
    has_target: np.ndarray,
    features: list[str],
    test_rows: int,
) -> dict[str, Any]:
    """The valid score of the reranker and of each source's own top-10 over the same candidates, the lift
    over the best source, the candidates' recall, the model's size and importances; the console lines."""
    figures: dict[str, Any] = {"model": "lgbm_lambdarank", "sources": sources}
    train = parts["train"]
    target = queries["valid"]["item"].to_numpy()
    m = tencentgr_score(out["valid"][0], target, k=TGR_K)
    figures["valid_score"] = round(m["score"], 5)
    figures["valid_hr@10"], figures["valid_ndcg@10"] = round(m["hr@10"], 5), round(m["ndcg@10"], 5)
    for s in sources:
        top = source_topk(parts["valid"], s, len(queries["valid"]), TGR_K)
        figures[f"valid_score_{s}"] = round(tencentgr_score(top, target, k=TGR_K)["score"], 5)
    best = max(sources, key=lambda s: figures[f"valid_score_{s}"])
    figures["best_source"] = best
    figures["lift_over_best_source"] = (
        round(figures["valid_score"] / figures[f"valid_score_{best}"] - 1, 4)
        if figures[f"valid_score_{best}"]
        else None
    )
    recall = parts["valid"].groupby("user_row")["label"].max().reindex(range(len(target)), fill_value=0) > 0
    figures |= {
        "valid_candidate_recall": round(float(recall.mean()), 5),
        "train_queries": int(train["user_row"].nunique()),
        "train_queries_with_target": int(len(np.unique(train["user_row"].to_numpy()[has_target]))),
        "trees": model.trees,
        "cv_ndcg@10": [f["ndcg@10"] for f in model.cv],
        "features": features,
        "rows": int(len(parts["train"]) + len(parts["valid"]) + test_rows),
        "gain": model.gain(),
    }
    log.info(
        "reranker valid score %.4f (HR@10 %.4f, NDCG@10 %.4f); best source %s %.4f; %d trees",
        m["score"],
        m["hr@10"],
        m["ndcg@10"],
        best,
        figures[f"valid_score_{best}"],
        model.trees,
    )
    log.info("feature importance (gain): %s", ", ".join(f"{k}={v:.1f}" for k, v in figures["gain"].items()))
    return figures
