"""`retrieve`: candidate sources (retrieve/sources.py) -> merged candidates, recall report, best ranking.

tencentgr (names in paths.Retrieved):
    covisit_before.npz     the co-visitation matrix of the valid fold's events (tgr_prepared.fit_events), and
    covisit_all.npz        of the test fold's (CSR, covisit.write_matrix):
                           fitted once, answering the covisit source and read by the stack stage's features
    train_queries.parquet  the stacker's queries: the last click of `data.stack_users` training users outside
                           the valid users (tgr_prepared.stack_queries)
    candidates.parquet     every source's top-K for the train, valid and test queries, merged (contract in
                           paths.Retrieved.CANDIDATES), plus the fused "merged" ranking's score and rank
    retrieval.json         recall@K per source and merged, each source's own valid top-10 score, the
                           seen-item decision (`seen_policy`: retrieve.exclude_seen, auto = decided from the
                           train queries' repeat share, tgr_prepared.seen_policy) and its figures
    predictions.parquet    the best validated ranking (a source or merged), for the ensemble
Train and valid queries are answered by sources fitted on tgr_prepared.fit_events(fold="valid"): the valid
users held out whole, the stacker's queries' users up to their first cut; test queries (predict users) by
sources fitted on every training event (fold="test"). With retrieve.fit_histories both fits also read the
released query histories (the predict users', and the valid users' in the valid fit), as inputs. The test
queries' candidates are merged and written TEST_CHUNK queries at a time (row groups): never held whole.
mmctr:
    features.parquet       split, row_id + float32 features (retrieve/features.py) for valid and test rows.
                           Not train rows: the co-visitation and the embed stage's alignment learn from train
                           clicks, so a train row's own label would reach its features.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.artifacts import atomic_path, write_json, write_table
from recstack.data.tables.predictions import ranking_table
from recstack.data.tables.prepared import read_hist, read_samples
from recstack.data.tables.tgr_prepared import (
    HeldOut,
    fit_events,
    pool_items,
    query_inputs,
    read_events,
    read_table,
    seen_policy,
)
from recstack.errors import DataError
from recstack.metrics import auc
from recstack.paths import MANIFEST, Predictions, PreparedTGR, Retrieved
from recstack.retrieve.base import MISSING, Events, Ranking, backfill, query_histories
from recstack.retrieve.covisit import Covisit, fit_covisit, write_matrix
from recstack.retrieve.features import FEATURES, row_features, train_sequences
from recstack.retrieve.history import History
from recstack.retrieve.index import VectorIndex, set_threads
from recstack.retrieve.merge import MERGED, TUNE_QUERIES, add_ranking, fuse, merge, tune_weights
from recstack.retrieve.report import ACTION_WEIGHTS, recall, top10
from recstack.retrieve.sources import SOURCES, SourceInputs, covisit_settings, index_settings
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)

SEQREC = "seqrec"
TEST_CHUNK = 5000  # test queries per row group of the candidates table (~6.6M rows at 1,330 per query)


class _RowGroups:
    """The candidates table written a part at a time (pyarrow ParquetWriter, one row group per part or more)
    to a temporary sibling, renamed onto `path` when the block succeeds (artifacts.atomic_path)."""

    def __init__(self, path: Path):
        self.path, self.rows = path, 0
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def __enter__(self) -> _RowGroups:
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        return self

    def write(self, part: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(part, schema=self.schema, preserve_index=False)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.writer.write_table(table)
        self.rows += len(part)

    def __exit__(self, *exc: Any) -> bool | None:
        if self.writer is not None:
            self.writer.close()
        return self._atomic.__exit__(*exc)


def _item_vecs(ctx: StageContext, n_rows: int) -> np.ndarray | None:
    path = ctx.embedded_items()
    if path is None:
        return None
    vecs = np.load(path)
    if vecs.ndim != 2 or vecs.shape[0] != n_rows:
        raise DataError(f"{path}: shape {vecs.shape}; expected ({n_rows}, dim): one row per item")
    return vecs


def _events(d: dict[str, np.ndarray]) -> Events:
    return Events(d["user"], d["item"], d["action"], d["ts"])


def _seqrec_dir(ctx: StageContext) -> Path | None:
    d = ctx.input_dir(SEQREC)
    return d if (d / MANIFEST).is_file() and (d / Predictions.FILE).is_file() else None


def _topk(rc: Any, name: str) -> int:
    return int(rc[name].topk)


def _backfill(r: Ranking, fallback: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) items of `r`, empty slots filled with the first items of `fallback` (Q, F), then of `pool`,
    not already listed (base.backfill); a filled slot scores below the row's own items, in fill order."""
    items, filled = backfill(r.items, k, fallback, pool)
    n_q, width = r.scores.shape
    own = np.full((n_q, k), np.nan, np.float32)
    own[:, : min(width, k)] = r.scores[:, :k]
    own = np.where(filled | (items == MISSING), np.nan, own)  # own items are a ranking's compacted prefix
    has = ~np.isnan(own).all(1)
    lo = np.where(has, np.nanmin(np.where(has[:, None], own, 0.0), axis=1), 0.0).astype(np.float32)
    j = np.cumsum(filled, axis=1) - 1  # the slot's place among the row's filled ones
    scores = np.where(filled, (lo - np.float32(1.0))[:, None] - j, np.nan_to_num(own, nan=0.0))
    return items, scores.astype(np.float32)


def run_tencentgr(ctx: StageContext) -> dict[str, Any]:
    cfg, rc, prep = ctx.cfg, ctx.cfg.retrieve, ctx.input_dir("prepare")
    set_threads(int(rc.index.threads))
    ev = read_events(prep)
    events = Events(ev["user"], ev["item"], ev["action"], ev["ts"])
    n_rows = pq.read_metadata(prep / PreparedTGR.ITEMS).num_rows
    pool = pool_items(prep)
    pool = pool[pool > 0]  # item 0 = a cold candidate never seen in training: no source can propose it
    valid = read_table(prep, PreparedTGR.VALID)
    held = HeldOut.of(ev, valid, int(cfg.data.stack_users), int(cfg.seed), int(cfg.data.stack_cuts))
    train = held.stack
    write_table(ctx.out / Retrieved.QUERIES, pa.Table.from_pandas(train, preserve_index=False))
    # seen items left out or kept: decided from these training queries' targets, never the valid users'
    # (retrieve.exclude_seen: auto; the same call as the seqrec and baseline stages make)
    policy = seen_policy(rc.exclude_seen, ev, train)
    exclude = policy.exclude
    log.info("retrieve: seen items %s (exclude_seen=%s: %s)", "left out" if exclude else "kept",
             policy.figures["setting"], policy.figures["reason"])  # fmt: skip
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    pe = read_events(prep, predict=True)

    # what the sources learn from and whose histories they answer: tgr_prepared.fit_events / query_inputs
    # (valid users held out whole, answered from their histories as the predict users are)
    fit_before = _events(fit_events(ev, pe, held, "valid", bool(rc.fit_histories)))
    queries = {
        "train": query_histories(events, train["user"].to_numpy(), "train", train["event_index"].to_numpy()),
        "valid": query_histories(
            _events(query_inputs(ev, pe, held, "valid")), valid["user"].to_numpy(), "valid"
        ),
        "test": query_histories(_events(query_inputs(ev, pe, held, "test")), pu["user"].to_numpy(), "test"),
    }
    targets = {"train": train, "valid": valid}

    seqrec_dir = _seqrec_dir(ctx) if rc.seqrec.enabled else None
    vecs = _item_vecs(ctx, n_rows) if rc.content.enabled else None
    inputs = SourceInputs(
        n_rows, pool, vecs, seqrec_dir, ctx.paths.run_dir / "_cache" / "retrieve", cfg.seed, cfg.device
    )
    sources = []
    for name, build in SOURCES.items():
        if not rc[name].enabled:
            continue
        src = build(rc, inputs)
        if isinstance(src, History) and exclude:
            log.info("source %s: left out, its candidates are seen items and these are excluded", name)
            continue
        if src is None:
            log.info("source %s: its input is absent (no %s stage output), left out", name,
                     "embed" if name == "content" else name)  # fmt: skip
            continue
        sources.append(src)
    if not sources:
        raise DataError("retrieve: no candidate source is enabled (retrieve.<source>.enabled)")
    names = [s.name for s in sources]

    rankings: dict[str, dict[str, Ranking]] = {s: {} for s in queries}
    alt: dict[str, Ranking] = {}  # valid rankings with the other exclude_seen setting
    st = covisit_settings(rc)

    def answer(fit: Events, splits: tuple[str, ...], matrix_name: str) -> None:
        """Every source fitted on `fit` answers `splits`; the co-visitation matrix is fitted once, written
        for the stack stage's features and handed to the covisit source."""
        for src in sources:
            if isinstance(src, Covisit):
                src.use(None, {})  # the previous event set's matrix goes first (one is ~2 GiB at 1M users)
        matrix, cov_fig = fit_covisit(fit, n_rows, st)
        write_matrix(ctx.out / matrix_name, matrix)
        for src in sources:
            if isinstance(src, Covisit):
                src.use(matrix, cov_fig)
            else:
                src.fit(fit)
            for split in splits:
                rankings[split][src.name] = src.recommend(queries[split], _topk(rc, src.name), exclude)
                log.info("source %s: %s queries answered", src.name, split)
            if "valid" in splits and rc.report_both:
                alt[src.name] = src.recommend(queries["valid"], _topk(rc, src.name), not exclude)

    def labelled(split: str, rank: dict[str, Ranking], users: np.ndarray, first: int) -> pd.DataFrame:
        """The merged candidates of queries first.. of `split` (answered by `rank`), fused and labelled."""
        t = merge(rank, users)
        fused = fuse(t, names, weights, float(rc.merge.rrf_k), len(users), int(rc.merge.topk))
        rank[MERGED] = fused
        t = add_ranking(t, MERGED, fused)
        if split in targets:
            tgt = targets[split]
            is_t = t["item"].to_numpy() == tgt["item"].to_numpy()[t["user_row"].to_numpy()]
            w = _metric_weight(tgt["action"].to_numpy())[t["user_row"].to_numpy()]
            t["label"] = np.where(is_t, w, 0.0).astype(np.float32)
        else:
            t["label"] = np.full(len(t), np.nan, np.float32)
        t["user_row"] += first
        t.insert(0, "split", split)
        t["n_sources"] = t["n_sources"].astype(np.int8)
        return t

    # train and valid queries: sources fitted on the valid fold (tgr_prepared.fit_events)
    answer(fit_before, ("train", "valid"), Retrieved.COVISIT_BEFORE)
    del fit_before  # one copy of the events at a time (~2 GiB each at TencentGR-1M size)
    weights, train_fit = [1.0] * len(names), None
    train_table = merge(rankings["train"], queries["train"].user)
    if rc.merge.tune and len(train) and len(names) > 1:  # fusion weights tuned on the train queries
        weights, train_fit = tune_weights(train_table, names, float(rc.merge.rrf_k), train["item"].to_numpy(),
                                          _metric_weight(train["action"].to_numpy()), TUNE_QUERIES,
                                          int(cfg.seed))  # fmt: skip
    del train_table
    candidates = _RowGroups(ctx.out / Retrieved.CANDIDATES)
    with candidates:
        candidates.write(labelled("train", rankings["train"], queries["train"].user, 0))
        vt = labelled("valid", rankings["valid"], queries["valid"].user, 0)
        candidates.write(vt)
        vt = vt[["user_row", "item"]]

        # report on the valid users
        v_target, v_action = valid["item"].to_numpy(), valid["action"].to_numpy()
        ks = [int(k) for k in rc.recall_ks]
        report: dict[str, Any] = {"sources": names, "fusion_weights": dict(zip(names, weights, strict=True)),
                                  "fusion_train_score": train_fit, "exclude_seen": exclude,
                                  "seen_policy": policy.figures,
                                  "valid_users": len(valid), "train_queries": len(train), "per_source": {}}  # fmt: skip
        for name in [*names, MERGED]:
            r = rankings["valid"][name]
            entry = recall(r, v_target, ks) | top10(r, v_target, v_action) if len(valid) else {}
            if name in alt and len(valid):
                other = top10(alt[name], v_target, v_action)["score"]
                entry[f"score_exclude_seen_{not exclude}"] = other
            report["per_source"][name] = entry
        union_hit = np.zeros(len(valid), bool)
        vq = vt["user_row"].to_numpy()
        union_hit[vq[vt["item"].to_numpy() == v_target[vq]]] = True
        report["union_recall"] = round(float(union_hit.mean()), 5) if len(valid) else None
        report["union_mean_candidates"] = round(len(vt) / max(len(valid), 1), 1)
        best = max([*names, MERGED], key=lambda s: report["per_source"][s].get("weighted_score", -1.0))
        report["best"] = best
        del vt, rankings["train"]

        # test queries (predict users): sources refitted on every event; the candidates of TEST_CHUNK queries
        # at a time become one row group, so the table is never held whole (~90M rows at TencentGR-1M size)
        fit_all = _events(fit_events(ev, pe, held, "test", bool(rc.fit_histories)))
        answer(fit_all, ("test",), Retrieved.COVISIT_ALL)
        del fit_all
        k = min(int(rc.predictions_topk), len(pool))
        out = {"valid": _backfill(rankings["valid"][best], rankings["valid"][MERGED].items, pool, k)}
        test_parts = []
        n_test = len(queries["test"])
        for c0 in range(0, max(n_test, 1), TEST_CHUNK):
            c1 = min(n_test, c0 + TEST_CHUNK)
            rank = {n: Ranking(r.items[c0:c1], r.scores[c0:c1]) for n, r in rankings["test"].items()}
            candidates.write(labelled("test", rank, queries["test"].user[c0:c1], c0))
            test_parts.append(_backfill(rank[best], rank[MERGED].items, pool, k))
        out["test"] = tuple(np.concatenate(x) for x in zip(*test_parts, strict=True))
    write_json(ctx.out / Retrieved.REPORT, report)

    # predictions: the best validated ranking, backfilled by the fused one then by the pool
    write_table(ctx.out / Predictions.FILE, ranking_table(out))

    figures: dict[str, Any] = {"best": best, "sources": ",".join(names), "train_queries": len(train),
                               "valid_users": len(valid), "test_users": len(pu),
                               "candidates_rows": candidates.rows, "union_recall": report["union_recall"]}  # fmt: skip
    # the submitted ranking's own figures: the leaderboard lists the retrieve stage as the model "retrieve:<best>"
    figures["model"] = f"retrieve:{best}"
    figures |= {"exclude_seen": exclude, **{f"seen_{k}": v for k, v in policy.figures.items()
                                             if k in ("repeat_share", "repeat_click_share", "queries")}}  # fmt: skip
    figures["valid_score"] = report["per_source"][best].get("score")
    for name, e in report["per_source"].items():
        for key in ("score", "weighted_score", "hr@10", "ndcg@10", *[f"recall@{k}" for k in ks]):
            if e.get(key) is not None:
                figures[f"valid_{key}_{name}"] = e[key]
        for key, v in e.items():
            if key.startswith("score_exclude_seen_"):
                figures[f"valid_{key}_{name}"] = v
    rk = next((k for k in (200, *ks) if k in ks), ks[0])  # the recall shown on the console
    for name in [*names, MERGED]:
        e = report["per_source"][name]
        other = "".join(f", {k} {v:.4f}" for k, v in e.items() if k.startswith("score_exclude"))
        log.info("retrieve %-8s valid score %.4f (HR@10 %.4f, NDCG@10 %.4f), recall@%d %s%s", name,
                 e.get("score", 0.0), e.get("hr@10", 0.0), e.get("ndcg@10", 0.0), rk, e.get(f"recall@{rk}"),
                 other)  # fmt: skip
    log.info("retrieve: fusion weights %s; union of candidates recall %.4f (%.0f per user); best validated "
             "ranking: %s -> predictions.parquet", report["fusion_weights"], report["union_recall"] or 0,
             report["union_mean_candidates"], best)  # fmt: skip
    return figures


def _metric_weight(action: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda a: ACTION_WEIGHTS.get(int(a), 0.0), otypes=[float])(action)


# ---- mmctr --------------------------------------------------------------------------------------------
def run_mmctr(ctx: StageContext) -> dict[str, Any]:
    cfg, rc, prep = ctx.cfg, ctx.cfg.retrieve, ctx.input_dir("prepare")
    set_threads(int(rc.index.threads))
    n_rows = pq.read_metadata(prep / "items.parquet").num_rows
    vecs = _item_vecs(ctx, n_rows)
    if vecs is None:
        raise DataError("retrieve (mmctr) needs the embed stage's item_emb.npy: run `./run.sh embed`")
    train = read_samples(prep, "train")
    events = train_sequences(train["user_id"].to_numpy(), read_hist(prep, "train"),
                             train["item_id"].to_numpy(), train["label"].to_numpy())  # fmt: skip
    st = covisit_settings(rc)
    matrix, cov_fig = fit_covisit(events, n_rows, st)
    items = np.arange(1, n_rows, dtype=np.int64)
    items = items[np.linalg.norm(vecs[items], axis=1) > 0]
    index = VectorIndex(vecs[items], index_settings(rc, len(items), cfg.device), ids=items,
                        cache_dir=ctx.paths.run_dir / "_cache" / "retrieve", seed=cfg.seed)  # fmt: skip
    frames = []
    figures: dict[str, Any] = {"covisit_pairs": cov_fig["pairs_kept"], "indexed_items": len(items)}
    for split in ("valid", "test"):
        rows = read_samples(prep, split)
        feats = row_features(read_hist(prep, split), rows["item_id"].to_numpy().astype(np.int64), vecs, matrix,
                             index, int(rc.feature_history), st.recency, int(rc.ann_cap))  # fmt: skip
        frames.append(
            pd.DataFrame({"split": split, "row_id": rows["row_id"].to_numpy().astype(np.int64), **feats})
        )
        if split == "valid" and "label" in rows:
            y = rows["label"].to_numpy()
            for f in FEATURES:
                sign = -1.0 if f == "ann_rank" else 1.0
                figures[f"valid_auc_{f}"] = round(auc(y, sign * feats[f]), 5)
    table = pd.concat(frames, ignore_index=True)
    write_table(ctx.out / Retrieved.FEATURES, pa.Table.from_pandas(table, preserve_index=False))
    figures["rows"] = len(table)
    log.info(
        "retrieve features (valid AUC of each alone): %s",
        ", ".join(f"{f} {figures[f'valid_auc_{f}']:.4f}" for f in FEATURES if f"valid_auc_{f}" in figures),
    )
    return figures
