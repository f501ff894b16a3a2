"""Tables a competitor looks at between runs: error slices, calibration, neighbours, retrieval coverage.

Every function takes arrays or a stage's files and returns a DataFrame / dict; plots.py draws them and the
notebooks show them. The formats other stages write are parsed in one place each (`recall_by_source`,
`source_scores` for retrieve's retrieval.json; `stack_importances` for the stack manifest), so a change of
those files is adapted here once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recstack.errors import DataError
from recstack.metrics import auc
from recstack.paths import MANIFEST, Predictions, Ranked

HIST_EDGES = (
    -1,
    0,
    4,
    16,
    64,
    np.inf,
)  # history lengths: none, short, medium, the model's full window, beyond
HIST_LABELS = ("0", "1-4", "5-16", "17-64", "65+")
POP_EDGES = (-1, 0, 9, 99, 999, np.inf)  # train clicks of the target: cold, tail ... head (log-spaced)
POP_LABELS = ("0", "1-9", "10-99", "100-999", "1000+")


# ---- manifests -----------------------------------------------------------------------------------------


def cut_text(text: str, width: int) -> str:
    """`text` if it fits `width` characters, else its first width - 3 and "..."."""
    return text if len(text) <= width else text[: width - 3] + "..."


def board_view(board: pd.DataFrame, columns, cut: int = 30, minute: bool = True) -> pd.DataFrame:
    """The leaderboard's `columns` (those it has, in that order) as the terminal and the page show them: the
    model name cut at `cut` characters, the metric without its `valid_` prefix, the time to the minute
    (MM-DD HH:MM) unless `minute` is off. leaderboard.csv keeps every cell whole."""
    shown = board[[c for c in columns if c in board.columns]].copy()
    if "model" in shown.columns:
        shown["model"] = shown["model"].astype(str).map(lambda m: cut_text(m, cut))
    if "metric" in shown.columns:
        shown["metric"] = shown["metric"].astype(str).str.removeprefix("valid_")
    if minute and "time" in shown.columns:
        shown["time"] = shown["time"].astype(str).str.slice(5, 16).str.replace("T", " ")
    return shown


def read_manifests(run_dir: str | Path, order: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """{stage: manifest} of every finished stage folder under a run folder: in the pipeline's `order` when
    given (folders it does not name after, as they finished), else in the order they finished."""
    out = []
    for path in sorted(Path(run_dir).glob(f"*/{MANIFEST}")):
        try:
            m = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from e
        out.append((m.get("finished_at", ""), path.parent.name, m))
    rank = {name: i for i, name in enumerate(order or [])}
    return {name: m for _, name, m in sorted(out, key=lambda t: (rank.get(t[1], len(rank)), t[0], t[1]))}


def flat_figures(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as one level of dotted keys (`modalities.text.weight`), lists joined for display."""
    out: dict[str, Any] = {}
    for k, v in figures.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flat_figures(v, f"{key}.")
        elif isinstance(v, list):
            out[key] = ", ".join(map(str, v)) if len(v) <= 12 else f"[{len(v)} values]"
        else:
            out[key] = v
    return out


def figures_table(manifests: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (stage, figure): every stage's figures, flattened."""
    rows = [(s, k, v) for s, m in manifests.items() for k, v in flat_figures(m.get("figures") or {}).items()]
    return pd.DataFrame(rows, columns=["stage", "figure", "value"])


# ---- rankers -------------------------------------------------------------------------------------------
RANK_CURVE = ("epoch", "train_loss", "valid_auc")  # a rank stage's curve.csv: one row per epoch (and fold)
SEQREC_CURVE = ("step", "train_loss", "valid_score")  # seqrec's: one row per evaluation step


def read_curve(stage_dir: str | Path) -> pd.DataFrame | None:
    """A stage's learning curve (curve.csv: paths.Ranked.CURVE / paths.Seqrec.CURVE) by its own schema, a rank
    stage's per epoch or seqrec's per evaluation step (told apart by its `step` column); None when the stage
    wrote none."""
    path = Path(stage_dir) / Ranked.CURVE
    if not path.is_file():
        return None
    curve = pd.read_csv(path)
    missing = set(SEQREC_CURVE if "step" in curve.columns else RANK_CURVE) - set(curve.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}")
    if "step" in curve.columns:
        return curve
    if "fold" not in curve.columns:
        curve.insert(0, "fold", "all")  # one fit (no OOF folds), as the rank stages name it
    return curve


def buckets(values: np.ndarray, edges: tuple[float, ...], labels: tuple[str, ...]) -> pd.Categorical:
    return pd.cut(np.asarray(values, np.float64), list(edges), labels=list(labels))


def auc_by(label: np.ndarray, pred: np.ndarray, group: pd.Categorical | np.ndarray) -> pd.DataFrame:
    """Rows, positive rate and AUC per group (AUC NaN where a group holds one class only)."""
    df = pd.DataFrame({"label": np.asarray(label, np.float64), "pred": pred, "group": group})
    rows = []
    for g, d in df.groupby("group", observed=True, sort=True):
        both = d["label"].nunique() == 2
        rows.append(
            {
                "group": g,
                "rows": len(d),
                "positive_rate": d["label"].mean(),
                "auc": auc(d["label"], d["pred"]) if both else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["group", "rows", "positive_rate", "auc"]).set_index("group")


def slice_auc(label: np.ndarray, preds: dict[str, np.ndarray], group: pd.Categorical) -> pd.DataFrame:
    """Rows per slice and each model's AUC in it (one column per model)."""
    tables = {name: auc_by(label, p, group) for name, p in preds.items()}
    first = next(iter(tables.values()))
    return pd.concat(
        [first[["rows", "positive_rate"]], *(t["auc"].rename(n) for n, t in tables.items())], axis=1
    )


def item_clicks(items: np.ndarray, labels: np.ndarray, n_items: int) -> np.ndarray:
    """(n_items,) clicks per item id among labelled rows (a target's popularity in train)."""
    return np.bincount(np.asarray(items)[np.asarray(labels) > 0], minlength=n_items)


def calibration(label: np.ndarray, pred: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean prediction vs observed rate in equal-count bins of the prediction; the ECE in `attrs`."""
    df = pd.DataFrame({"label": np.asarray(label, np.float64), "pred": np.asarray(pred, np.float64)})
    df["bin"] = pd.qcut(df["pred"].rank(method="first"), min(bins, len(df)), labels=False)
    t = df.groupby("bin").agg(rows=("label", "size"), mean_pred=("pred", "mean"), observed=("label", "mean"))
    t.attrs["ece"] = float((t["rows"] * (t["mean_pred"] - t["observed"]).abs()).sum() / max(len(df), 1))
    return t


def run_calibration(
    run_dir: str | Path, manifests: dict[str, dict[str, Any]], bins: int = 10
) -> dict[str, pd.DataFrame]:
    """{stage: calibration table (valid)} of every mmctr stage of `manifests` (read_manifests of the run
    folder) that wrote per-row predictions (baseline, rankers, stacker, a probability-scale ensemble), against
    prepare's valid labels; {} before prepare has run."""
    from recstack.data.tables.predictions import read_predictions  # here: only mmctr runs need them
    from recstack.data.tables.prepared import read_samples

    run_dir = Path(run_dir)
    if not (run_dir / "prepare" / MANIFEST).is_file():
        return {}
    valid = read_samples(run_dir / "prepare", "valid")
    out = {}
    for s, manifest in manifests.items():
        folder = run_dir / s
        if s == "prepare" or not (folder / Predictions.FILE).is_file():
            continue
        method = (manifest.get("figures") or {}).get("method")
        if method == "rank":  # a percentile blend is a ranking, not a probability: nothing to calibrate
            continue
        pred = read_predictions(folder, "valid", valid["row_id"].to_numpy())
        out[s] = calibration(valid["label"].to_numpy(), pred, bins)
    return out


# ---- item embeddings -----------------------------------------------------------------------------------
def unit_rows(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def nearest_items(matrix: np.ndarray, queries: np.ndarray, k: int = 5) -> pd.DataFrame:
    """Top-k cosine neighbours of each query item (row == item id; row 0 and all-zero rows never match)."""
    queries = np.asarray(queries, np.int64)
    if ((queries < 1) | (queries >= len(matrix))).any():
        raise DataError(f"nearest_items: query ids must be in 1..{len(matrix) - 1}; got {queries.tolist()}")
    e = unit_rows(matrix)
    scores = e[queries] @ e.T  # (Q, I)
    scores[:, 0] = -np.inf
    scores[:, np.abs(matrix).sum(1) == 0] = -np.inf
    scores[np.arange(len(queries)), queries] = -np.inf  # not itself
    k = min(k, len(matrix) - 2)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return pd.DataFrame(
        {
            "query": np.repeat(queries, k),
            "rank": np.tile(np.arange(1, k + 1), len(queries)),
            "item": top.reshape(-1),
            "cosine": np.take_along_axis(scores, top, 1).reshape(-1),
        }
    )


def pca_2d(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), 2) coordinates of the chosen rows on the first two principal axes of those rows."""
    x = unit_rows(matrix[rows])
    x -= x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def main_tag(tags: np.ndarray, top: int = 8) -> np.ndarray:
    """One label per item from its (left-padded) tag list: the first non-zero tag if it is one of the `top`
    most frequent first tags, else "other" (a readable legend), "none" without tags."""
    tags = np.asarray(tags)
    first = np.where((tags != 0).any(1), tags[np.arange(len(tags)), (tags != 0).argmax(1)], 0)
    counts = pd.Series(first[first != 0]).value_counts()
    keep = set(counts.index[:top])
    return np.array(["none" if t == 0 else (f"tag {t}" if t in keep else "other") for t in first])


def modality_weights(embed_manifest: dict[str, Any]) -> pd.DataFrame:
    """The embed stage's modalities (dim, source, weight, coverage), one row each."""
    mods = (embed_manifest.get("figures") or {}).get("modalities") or {}
    return pd.DataFrame.from_dict(mods, orient="index")


def alignment_curve(embed_manifest: dict[str, Any]) -> pd.Series | None:
    """The embed stage's alignment head: held-out contrastive loss by epoch (epoch 0 = before training); None
    when the stage trained no alignment."""
    align = (embed_manifest.get("figures") or {}).get("align") or {}
    losses = align.get("holdout_loss_by_epoch")
    if not losses:
        return None
    start = [align["holdout_loss_start"]] if "holdout_loss_start" in align else []
    first = 0 if start else 1
    return pd.Series(
        start + list(losses), index=range(first, first + len(start) + len(losses)), name="holdout loss"
    )


def feature_aucs(manifest: dict[str, Any], metric: str = "valid_auc") -> pd.Series | None:
    """`{metric}_<name>` figures of a stage (mmctr retrieve: each stacker feature alone; the ensemble and
    stack: each source), best first; None with fewer than two."""
    figures = manifest.get("figures") or {}
    prefix = f"{metric}_"
    v = {
        k.removeprefix(prefix): x
        for k, x in figures.items()
        if k.startswith(prefix) and isinstance(x, int | float) and k != f"{metric}_fold_mean"
    }
    if len(v) < 2:
        return None
    return pd.Series(v, name=metric, dtype=np.float64).sort_values(ascending=False)


def ensemble_weights(manifest: dict[str, Any]) -> pd.Series | None:
    """The ensemble's blend weights by source name (figures `weights` in the order of `sources`); None
    without both."""
    figures = manifest.get("figures") or {}
    sources, weights = figures.get("sources"), figures.get("weights")
    if not sources or not weights or len(sources) != len(weights):
        return None
    return pd.Series(weights, index=sources, name="weight", dtype=np.float64)


def length_histogram(lengths: np.ndarray, width: int = 10, cap: int = 100) -> pd.Series:
    """Count per bucket of `width` ("0-9", "10-19", ...), everything from `cap` on in one "cap+" bucket."""
    lengths = np.asarray(lengths)
    b = np.minimum(lengths, cap) // width
    counts = np.bincount(b, minlength=cap // width + 1)
    labels = [f"{i * width}-{i * width + width - 1}" for i in range(cap // width)] + [f"{cap}+"]
    return pd.Series(counts[: len(labels)], index=labels, name="count")


# ---- top-k rankings (tencentgr) ------------------------------------------------------------------------
def hit_ranks(top: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(U,) 0-based position of each user's target in its ranking (U, K); -1 where it is not there."""
    hit = top == np.asarray(target)[:, None]
    return np.where(hit.any(1), hit.argmax(1), -1)


def hit_summary(ranks: np.ndarray, k: int = 10) -> pd.Series:
    found = ranks >= 0
    n = max(len(ranks), 1)
    return pd.Series(
        {
            "users": len(ranks),
            f"HR@{k}": float(((ranks >= 0) & (ranks < k)).sum() / n),
            f"NDCG@{k}": float(
                (np.where(found & (ranks < k), 1 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)).sum() / n
            ),
            "found in the whole ranking": float(found.mean()) if len(ranks) else np.nan,
            "median rank when found": float(np.median(ranks[found])) if found.any() else np.nan,
        }
    )


# ---- stacker -------------------------------------------------------------------------------------------
def stack_importances(manifest: dict[str, Any] | None) -> pd.Series | None:
    """{feature: importance} of the stack stage's manifest figures (`gain`, or any `*importance*` dict),
    largest first; None when the stage has not run or reports none."""
    figures = (manifest or {}).get("figures") or {}
    for key in ("gain", *sorted(k for k in figures if "importance" in k)):
        v = figures.get(key)
        if isinstance(v, dict) and v and all(isinstance(x, int | float) for x in v.values()):
            return pd.Series(v, name=key, dtype=np.float64).sort_values(ascending=False)
    return None


# ---- retrieval -----------------------------------------------------------------------------------------
_RECALL = re.compile(r"^recall@(\d+)$")


def recall_by_source(report: dict[str, Any]) -> dict[str, dict[int, float]]:
    """{source: {K: recall}} from the retrieve stage's retrieval.json (`per_source: {name: {"recall@K": r}}`).

    A plain `{source: {K: recall}}` dict passes through (keys made int), so a plot needs nothing else."""
    per_source = report.get("per_source", report)
    out: dict[str, dict[int, float]] = {}
    for source, entry in per_source.items():
        if not isinstance(entry, dict):
            continue
        curve = {}
        for k, v in entry.items():
            m = _RECALL.match(str(k))
            if m and v is not None:
                curve[int(m.group(1))] = float(v)
            elif str(k).isdigit() and v is not None:
                curve[int(k)] = float(v)
        if curve:
            out[source] = dict(sorted(curve.items()))
    return out


def source_scores(report: dict[str, Any]) -> pd.DataFrame:
    """Each source's own valid top-10 figures (score, HR@10, NDCG@10, ...) from retrieval.json."""
    rows = {
        s: {
            _SEEN_NAMES.get(k, k): v
            for k, v in e.items()
            if not _RECALL.match(k) and isinstance(v, int | float)
        }
        for s, e in (report.get("per_source") or {}).items()
        if isinstance(e, dict)
    }
    return pd.DataFrame.from_dict(rows, orient="index")


# retrieve's score of the valid users under the other seen-item setting (retrieve.report_both), for reading
_SEEN_NAMES = {
    "score_exclude_seen_True": "score, seen items left out",
    "score_exclude_seen_False": "score, seen items kept",
}


def source_overlap(candidates: pd.DataFrame, split: str = "valid", k: int | None = None) -> pd.DataFrame:
    """Jaccard overlap of the (user, item) pairs each source proposes (its top `k`, or all it returned),
    from the retrieve stage's candidates table (`{source}_rank` = -1 where the source did not propose)."""
    c = candidates[candidates["split"] == split]
    sources = [col[: -len("_rank")] for col in c.columns if col.endswith("_rank")]
    if not sources:
        raise DataError("candidates table has no `<source>_rank` columns")
    proposed = {}
    for s in sources:
        r = c[f"{s}_rank"].to_numpy()
        proposed[s] = (r >= 0) & (r < k if k is not None else True)
    m = np.zeros((len(sources), len(sources)))
    for i, a in enumerate(sources):
        for j, b in enumerate(sources):
            union = (proposed[a] | proposed[b]).sum()
            m[i, j] = (proposed[a] & proposed[b]).sum() / union if union else np.nan
    return pd.DataFrame(m, index=sources, columns=sources)


# ---- sweeps --------------------------------------------------------------------------------------------
def sweep_studies(run_dir: str | Path) -> list[Path]:
    """The sweep studies of a run folder: `<run>/sweeps/<study>.db` (recstack.sweep's SQLite storage)."""
    return sorted((Path(run_dir) / "sweeps").glob("*.db"))


def _load_study(db: str | Path):
    import optuna  # here, not at import: the report and notebooks import this module without a sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = Path(db)
    if not db.is_file():
        raise DataError(f"{db}: no such sweep study (./run.sh sweep writes <run>/sweeps/<study>.db)")
    try:
        return optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db.resolve()}")
    except KeyError as e:  # a database that holds no study of that name
        raise DataError(f"{db}: holds no study named {db.stem!r}") from e


def sweep_trials(db: str | Path) -> pd.DataFrame:
    """One row per trial of a sweep study: number, state, value (the objective: the stage's valid figure;
    a pruned trial's last reported value, `step` where it stopped), the best value so far among complete
    trials, each parameter, the overrides and the trial's wall time in seconds."""
    study = _load_study(db)
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        value, step = t.value, None
        if state == "pruned" and t.intermediate_values:
            step = max(t.intermediate_values)
            value = t.intermediate_values[step]
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else np.nan
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": value,
                "step": step,
                "seconds": seconds,
                **{f"param.{k}": v for k, v in t.params.items()},
                "overrides": " ".join(t.user_attrs.get("overrides", [])),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(
            columns=["trial", "state", "value", "step", "best_so_far", "seconds", "overrides"]
        )
    complete = df["value"].where(df["state"] == "complete")
    df.insert(4, "best_so_far", complete.astype(np.float64).cummax())
    return df


def sweep_importances(db: str | Path, seed: int = 0) -> pd.Series | None:
    """Each parameter's share of the objective's variance over the complete trials (Optuna's fANOVA
    importance, Hutter et al. 2014), largest first; None with fewer than two complete trials or nothing
    varied (fANOVA needs a spread to explain)."""
    import optuna

    study = _load_study(db)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return None
    varied = [k for k in complete[0].params if len({repr(t.params.get(k)) for t in complete}) > 1]
    if not varied:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    imp = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)
    return pd.Series(imp, name="importance", dtype=np.float64).sort_values(ascending=False)


def sweep_summary(db: str | Path, trials: pd.DataFrame | None = None) -> pd.Series:
    """Trials by state and the best complete trial (number, value, overrides) of a study; `trials`: its
    sweep_trials when the caller has read them already (the study is read once)."""
    trials = sweep_trials(db) if trials is None else trials
    states = trials["state"].value_counts()
    out = {
        "study": Path(db).stem,
        "trials": len(trials),
        **{s: int(states.get(s, 0)) for s in ("complete", "pruned", "fail", "running")},
    }
    done = trials[trials["state"] == "complete"]
    if len(done):
        best = done.loc[done["value"].astype(np.float64).idxmax()]
        out |= {
            "best trial": int(best["trial"]),
            "best valid": float(best["value"]),
            "best overrides": best["overrides"],
        }
    return pd.Series(out)
