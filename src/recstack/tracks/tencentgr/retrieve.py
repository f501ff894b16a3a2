"""`retrieve` for tencentgr: candidate sources (retrieve/sources.py) -> merged candidates, recall report,
the best validated ranking. Writes (names in paths.Retrieved):
    covisit_before.npz     the co-visitation matrix of the valid fold's events (tgr_prepared.fit_events), and
    covisit_all.npz        of the test fold's (CSR, covisit.write_matrix):
                           fitted once, answering the covisit source and read by the stack stage's features
    candidates.parquet     every source's top-K for the train, valid and test queries, merged (contract in
                           paths.Retrieved.CANDIDATES), plus the fused "merged" ranking's score and rank
    retrieval.json         recall@K per source and merged, each source's own valid top-10 score, the
                           seen-item decision (`seen_policy`: retrieve.exclude_seen, auto = decided from the
                           stacker's queries' repeat share, prepare's seen_shares.json) and its figures
    predictions.parquet    the best validated ranking (a source or merged), for the ensemble
The train queries are the stacker's, as prepare drew them (PreparedTGR.STACK_QUERIES).
Train and valid queries are answered by sources fitted on tgr_prepared.fit_events(fold="valid"): the valid
users held out whole, the stacker's queries' users up to their first cut; test queries (predict users) by
sources fitted on every training event (fold="test"). With retrieve.fit_histories both fits also read the
released query histories (the predict users', and the valid users' in the valid fit), as inputs. The test
queries' candidates are merged and written TEST_CHUNK queries at a time (row groups): never held whole.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.artifacts import atomic_path, write_json, write_table
from recstack.data.tables.predictions import ranking_table
from recstack.data.tables.tgr_prepared import (
    HeldOut,
    fit_events,
    pool_items,
    query_inputs,
    read_events,
    read_held_out,
    read_seen_policy,
    read_table,
)
from recstack.errors import DataError
from recstack.paths import MANIFEST, Predictions, PreparedTGR, Retrieved
from recstack.retrieve.base import MISSING, Events, Queries, Ranking, Source, backfill, query_histories
from recstack.retrieve.covisit import Covisit, fit_covisit, write_matrix
from recstack.retrieve.history import History
from recstack.retrieve.index import set_threads
from recstack.retrieve.merge import MERGED, TUNE_QUERIES, add_ranking, fuse, merge, tune_weights
from recstack.retrieve.report import recall, top10
from recstack.retrieve.sources import SOURCES, SourceInputs
from recstack.stages.context import StageContext
from recstack.tasks import ACTION_WEIGHTS

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


@dataclass
class _Queries:
    """What the stage answers: each split's query histories, the train / valid targets, the seen-item policy,
    and the events the sources are fitted on (tgr_prepared.fit_events / query_inputs: the valid users held
    out whole and answered from their histories, as the predict users are)."""

    ev: dict[str, np.ndarray]
    pe: dict[str, np.ndarray]
    held: HeldOut
    train: pd.DataFrame  # the stacker's queries (HeldOut.stack)
    valid: pd.DataFrame
    predict_users: pd.DataFrame
    queries: dict[str, Queries]
    exclude: bool
    policy_figures: dict[str, Any]

    @property
    def targets(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "valid": self.valid}


def _read_queries(ctx: StageContext) -> _Queries:
    rc, prep = ctx.cfg.retrieve, ctx.input_dir("prepare")
    ev = read_events(prep)
    events = Events(ev["user"], ev["item"], ev["action"], ev["ts"])
    held = read_held_out(prep)  # the valid users' targets and the stacker's queries, as prepare drew them
    valid, train = held.valid, held.stack
    # seen items left out or kept: decided from these training queries' targets, never the valid users'
    # (retrieve.exclude_seen: auto; the same decision as the seqrec and baseline stages read)
    policy = read_seen_policy(prep, rc.exclude_seen)
    log.info(
        "retrieve: seen items %s (exclude_seen=%s: %s)",
        "left out" if policy.exclude else "kept",
        policy.figures["setting"],
        policy.figures["reason"],
    )
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    pe = read_events(prep, predict=True)
    queries = {
        "train": query_histories(events, train["user"].to_numpy(), "train", train["event_index"].to_numpy()),
        "valid": query_histories(
            _events(query_inputs(ev, pe, held, "valid")), valid["user"].to_numpy(), "valid"
        ),
        "test": query_histories(_events(query_inputs(ev, pe, held, "test")), pu["user"].to_numpy(), "test"),
    }
    return _Queries(ev, pe, held, train, valid, pu, queries, policy.exclude, policy.figures)


def _sources(ctx: StageContext, n_rows: int, pool: np.ndarray, exclude: bool) -> list[Source]:
    """The enabled sources (retrieve/sources.SOURCES) whose inputs exist; `history` only with seen items kept."""
    cfg, rc = ctx.cfg, ctx.cfg.retrieve
    seqrec_dir = _seqrec_dir(ctx) if rc.seqrec.enabled else None
    vecs = ctx.item_vectors(n_rows) if rc.content.enabled else None
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
            log.info(
                "source %s: its input is absent (no %s stage output), left out",
                name,
                "embed" if name == "content" else name,
            )
            continue
        sources.append(src)
    if not sources:
        raise DataError("retrieve: no candidate source is enabled (retrieve.<source>.enabled)")
    return sources


@dataclass
class _Answers:
    """Every source's ranking per split (`rankings`), and of the valid users with the other exclude_seen
    setting (`alt`, retrieve.report_both)."""

    ctx: StageContext
    sources: list[Source]
    q: _Queries
    n_rows: int
    rankings: dict[str, dict[str, Ranking]] = field(default_factory=dict)
    alt: dict[str, Ranking] = field(default_factory=dict)

    def answer(self, fit: Events, splits: tuple[str, ...], matrix_name: str) -> None:
        """Every source fitted on `fit` answers `splits`; the co-visitation matrix is fitted once, written
        for the stack stage's features and handed to the covisit source."""
        rc, exclude = self.ctx.cfg.retrieve, self.q.exclude
        for src in self.sources:
            if isinstance(src, Covisit):
                src.use(None, {})  # the previous event set's matrix goes first (one is ~2 GiB at 1M users)
        matrix, cov_fig = fit_covisit(fit, self.n_rows, rc.covisit)
        write_matrix(self.ctx.out / matrix_name, matrix)
        for src in self.sources:
            if isinstance(src, Covisit):
                src.use(matrix, cov_fig)
            else:
                src.fit(fit)
            for split in splits:
                self.rankings.setdefault(split, {})[src.name] = src.recommend(
                    self.q.queries[split], _topk(rc, src.name), exclude
                )
                log.info("source %s: %s queries answered", src.name, split)
            if "valid" in splits and rc.report_both:
                self.alt[src.name] = src.recommend(self.q.queries["valid"], _topk(rc, src.name), not exclude)


def _labelled(
    rc: Any,
    names: list[str],
    weights: list[float],
    targets: dict[str, pd.DataFrame],
    split: str,
    rank: dict[str, Ranking],
    users: np.ndarray,
    first: int,
) -> pd.DataFrame:
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


def _valid_report(
    rc: Any,
    q: _Queries,
    a: _Answers,
    names: list[str],
    weights: list[float],
    train_fit: Any,
    vt: pd.DataFrame,
) -> dict[str, Any]:
    """retrieval.json: recall@K and the top-10 score of every source and the fused ranking on the valid
    users, the union's recall, and the best validated ranking."""
    valid, exclude = q.valid, q.exclude
    v_target, v_action = valid["item"].to_numpy(), valid["action"].to_numpy()
    ks = [int(k) for k in rc.recall_ks]
    report: dict[str, Any] = {
        "sources": names,
        "fusion_weights": dict(zip(names, weights, strict=True)),
        "fusion_train_score": train_fit,
        "exclude_seen": exclude,
        "seen_policy": q.policy_figures,
        "valid_users": len(valid),
        "train_queries": len(q.train),
        "per_source": {},
    }
    for name in [*names, MERGED]:
        r = a.rankings["valid"][name]
        entry = recall(r, v_target, ks) | top10(r, v_target, v_action) if len(valid) else {}
        if name in a.alt and len(valid):
            other = top10(a.alt[name], v_target, v_action)["score"]
            entry[f"score_exclude_seen_{not exclude}"] = other
        report["per_source"][name] = entry
    union_hit = np.zeros(len(valid), bool)
    vq = vt["user_row"].to_numpy()
    union_hit[vq[vt["item"].to_numpy() == v_target[vq]]] = True
    report["union_recall"] = round(float(union_hit.mean()), 5) if len(valid) else None
    report["union_mean_candidates"] = round(len(vt) / max(len(valid), 1), 1)
    report["best"] = max([*names, MERGED], key=lambda s: report["per_source"][s].get("weighted_score", -1.0))
    return report


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, rc, prep = ctx.cfg, ctx.cfg.retrieve, ctx.input_dir("prepare")
    set_threads(int(rc.index.threads))
    q = _read_queries(ctx)
    n_rows = pq.read_metadata(prep / PreparedTGR.ITEMS).num_rows
    pool = pool_items(prep)
    pool = pool[pool > 0]  # item 0 = a cold candidate never seen in training: no source can propose it
    sources = _sources(ctx, n_rows, pool, q.exclude)
    names = [s.name for s in sources]
    a = _Answers(ctx, sources, q, n_rows, {s: {} for s in q.queries})

    # train and valid queries: sources fitted on the valid fold (tgr_prepared.fit_events)
    a.answer(
        _events(fit_events(q.ev, q.pe, q.held, "valid", bool(rc.fit_histories))),
        ("train", "valid"),
        Retrieved.COVISIT_BEFORE,
    )
    weights, train_fit = [1.0] * len(names), None
    train_table = merge(a.rankings["train"], q.queries["train"].user)
    if rc.merge.tune and len(q.train) and len(names) > 1:  # fusion weights tuned on the train queries
        weights, train_fit = tune_weights(
            train_table,
            names,
            float(rc.merge.rrf_k),
            q.train["item"].to_numpy(),
            _metric_weight(q.train["action"].to_numpy()),
            TUNE_QUERIES,
            int(cfg.seed),
        )
    del train_table
    labelled = functools.partial(_labelled, rc, names, weights, q.targets)
    candidates = _RowGroups(ctx.out / Retrieved.CANDIDATES)
    with candidates:
        candidates.write(labelled("train", a.rankings["train"], q.queries["train"].user, 0))
        vt = labelled("valid", a.rankings["valid"], q.queries["valid"].user, 0)
        candidates.write(vt)
        report = _valid_report(rc, q, a, names, weights, train_fit, vt[["user_row", "item"]])
        best = report["best"]
        del vt, a.rankings["train"]

        # test queries (predict users): sources refitted on every event; the candidates of TEST_CHUNK queries
        # at a time become one row group, so the table is never held whole (~90M rows at TencentGR-1M size)
        a.answer(
            _events(fit_events(q.ev, q.pe, q.held, "test", bool(rc.fit_histories))),
            ("test",),
            Retrieved.COVISIT_ALL,
        )
        k = min(int(rc.predictions_topk), len(pool))
        out = {"valid": _backfill(a.rankings["valid"][best], a.rankings["valid"][MERGED].items, pool, k)}
        test_parts = []
        n_test = len(q.queries["test"])
        for c0 in range(0, max(n_test, 1), TEST_CHUNK):
            c1 = min(n_test, c0 + TEST_CHUNK)
            rank = {n: Ranking(r.items[c0:c1], r.scores[c0:c1]) for n, r in a.rankings["test"].items()}
            candidates.write(labelled("test", rank, q.queries["test"].user[c0:c1], c0))
            test_parts.append(_backfill(rank[best], rank[MERGED].items, pool, k))
        out["test"] = tuple(np.concatenate(x) for x in zip(*test_parts, strict=True))
    write_json(ctx.out / Retrieved.REPORT, report)
    # predictions: the best validated ranking, backfilled by the fused one then by the pool
    write_table(ctx.out / Predictions.FILE, ranking_table(out))
    return _figures(rc, q, names, report, candidates.rows)


def _figures(rc: Any, q: _Queries, names: list[str], report: dict[str, Any], rows: int) -> dict[str, Any]:
    """The manifest's figures (the submitted ranking's own as the stage's valid score) and the console lines."""
    best = report["best"]
    ks = [int(k) for k in rc.recall_ks]
    figures: dict[str, Any] = {
        "best": best,
        "sources": ",".join(names),
        "train_queries": len(q.train),
        "valid_users": len(q.valid),
        "test_users": len(q.predict_users),
        "candidates_rows": rows,
        "union_recall": report["union_recall"],
    }
    # the submitted ranking's own figures: the leaderboard lists the retrieve stage as the model "retrieve:<best>"
    figures["model"] = f"retrieve:{best}"
    figures |= {
        "exclude_seen": q.exclude,
        **{
            f"seen_{k}": v
            for k, v in q.policy_figures.items()
            if k in ("repeat_share", "repeat_click_share", "queries")
        },
    }
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
        log.info(
            "retrieve %-8s valid score %.4f (HR@10 %.4f, NDCG@10 %.4f), recall@%d %s%s",
            name,
            e.get("score", 0.0),
            e.get("hr@10", 0.0),
            e.get("ndcg@10", 0.0),
            rk,
            e.get(f"recall@{rk}"),
            other,
        )
    log.info(
        "retrieve: fusion weights %s; union of candidates recall %.4f (%.0f per user); best validated "
        "ranking: %s -> predictions.parquet",
        report["fusion_weights"],
        report["union_recall"] or 0,
        report["union_mean_candidates"],
        best,
    )
    return figures


def _metric_weight(action: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda a: ACTION_WEIGHTS.get(int(a), 0.0), otypes=[float])(action)
