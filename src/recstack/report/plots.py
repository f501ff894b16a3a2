"""Figures as matplotlib `Figure` objects, built without pyplot: headless and backend-free (a stage saves them
as PNG, a notebook shows them inline, the report embeds them), and no global figure state to leak.

Each function draws one table from analysis.py; none reads files except `cover_grid` (image paths).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from recstack.artifacts import atomic_path


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure atomically (a half-written PNG never looks finished)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def png_base64(fig: Figure, dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _label_above(ax, x: float, y: float, text: str) -> None:
    """A small label just above the point (x, y): the best epoch or step of a curve."""
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)


def learning_curves(curve: pd.DataFrame, title: str = "") -> Figure:
    """Train / valid loss and valid AUC per epoch, one line per fold (a rank stage's curve.csv); seqrec's curve
    (a `step` column) by evaluation step instead (seqrec_curves)."""
    if "step" in curve.columns:
        return seqrec_curves(curve, title)
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_loss, ax_auc = fig.subplots(1, 2)
    for fold, d in curve.groupby(curve["fold"].astype(str), sort=False):  # "all" (one fit) or 0..K-1
        tag = "" if fold == "all" else f" fold {fold}"
        ax_loss.plot(d["epoch"], d["train_loss"], "o-", label=f"train{tag}")
        if "valid_logloss" in d:
            ax_loss.plot(d["epoch"], d["valid_logloss"], "s--", label=f"valid{tag}")
        ax_auc.plot(d["epoch"], d["valid_auc"], "o-", label=f"valid AUC{tag}")
        best = d.loc[d["valid_auc"].idxmax()]
        _label_above(ax_auc, best["epoch"], best["valid_auc"], f"{best['valid_auc']:.4f}")
    ax_loss.set(xlabel="epoch", ylabel="logloss", title="loss")
    ax_auc.set(xlabel="epoch", ylabel="AUC", title="valid AUC (best epoch marked)")
    ax_auc.margins(y=0.2)  # room for the best epoch's label
    for ax in (ax_loss, ax_auc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def seqrec_curves(curve: pd.DataFrame, title: str = "") -> Figure:
    """seqrec's curve.csv: training loss, and the valid score, HR@10 and NDCG@10 by evaluation step, the best
    step (the weights the stage keeps) marked."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_loss, ax_score = fig.subplots(1, 2)
    ax_loss.plot(curve["step"], curve["train_loss"], "o-", label="train")
    for col, style in (("valid_score", "o-"), ("valid_hr@10", "s--"), ("valid_ndcg@10", "^:")):
        if col in curve:
            ax_score.plot(curve["step"], curve[col], style, label=col.removeprefix("valid_"))
    best = curve.loc[curve["valid_score"].idxmax()]
    ax_score.axvline(best["step"], color="grey", alpha=0.5)
    _label_above(
        ax_score,
        best["step"],
        best["valid_score"],
        f"best step {int(best['step'])}: {best['valid_score']:.4f}",
    )
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss")
    ax_score.set(xlabel="step", ylabel="valid", title="valid score = 0.31 HR@10 + 0.69 NDCG@10")
    ax_score.margins(y=0.2)
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def bars(values: pd.Series, title: str, xlabel: str = "", annotate: pd.Series | None = None) -> Figure:
    """Horizontal bars, first value on top (importances, weights, AUC per slice); `annotate` labels each."""
    values = values.dropna()
    fig = Figure(figsize=(6.5, 0.35 * len(values) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(values))[::-1]
    ax.barh(y, values.to_numpy(dtype=np.float64), color="tab:blue")
    ax.set_yticks(y, [str(i) for i in values.index])
    if annotate is not None:
        for yi, (k, v) in zip(y, values.items(), strict=True):
            ax.annotate(
                str(annotate.get(k, "")), (v, yi), textcoords="offset points", xytext=(3, -3), fontsize=7
            )
    ax.set(xlabel=xlabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def embed_summary(weights: pd.DataFrame, align: pd.Series | None, title: str = "embed") -> Figure:
    """The embed stage: each modality's fusion weight with its item coverage (analysis.modality_weights),
    and the alignment head's held-out loss by epoch when it trained one (analysis.alignment_curve)."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax_w, ax_a = fig.subplots(1, 2)
    y = np.arange(len(weights))[::-1]
    ax_w.barh(y - 0.2, weights["weight"].astype(np.float64), 0.4, label="weight", color="tab:blue")
    ax_w.barh(y + 0.2, weights["coverage"].astype(np.float64), 0.4, label="item coverage", color="tab:green")
    ax_w.set_yticks(y, [f"{m} ({int(d)}-d)" for m, d in zip(weights.index, weights["dim"], strict=True)])
    ax_w.set(xlim=(0, 1.05), title="modalities: fusion weight and coverage")
    ax_w.legend(fontsize=7)
    if align is not None:
        ax_a.plot(align.index, align.to_numpy(np.float64), "o-")
        ax_a.set(xlabel="epoch", ylabel="held-out InfoNCE loss", title="alignment head")
        ax_a.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax_a.axis("off")
        ax_a.text(0.5, 0.5, "no alignment head trained", ha="center", va="center")
    for ax in (ax_w, ax_a):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def auc_slices(table: pd.DataFrame, title: str) -> Figure:
    """AUC per slice with each slice's row count (analysis.auc_by)."""
    return bars(table["auc"], title, "AUC", annotate=table["rows"].map(lambda n: f"n={n}"))


def calibration_plot(tables: dict[str, pd.DataFrame], title: str = "calibration (valid)") -> Figure:
    """Observed click rate vs mean prediction per bin, one line per model (analysis.calibration); the
    diagonal is perfect calibration; the legend gives each model's ECE."""
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.subplots()
    hi = max(max(float(t["mean_pred"].max()), float(t["observed"].max())) for t in tables.values())
    ax.plot([0, hi], [0, hi], ":", color="grey")
    for name, t in tables.items():
        ax.plot(
            t["mean_pred"], t["observed"], "o-", ms=3, label=f"{name} (ECE {t.attrs.get('ece', np.nan):.3f})"
        )
    ax.set(xlabel="mean prediction", ylabel="observed rate", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def slice_lines(table: pd.DataFrame, title: str, skip: tuple[str, ...] = ("rows", "positive_rate")) -> Figure:
    """One line per model over ordered slices (analysis.slice_auc), the slice's rows under each tick."""
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    x = np.arange(len(table))
    for col in [c for c in table.columns if c not in skip]:
        ax.plot(x, table[col].to_numpy(np.float64), "o-", label=col)
    rows = table["rows"] if "rows" in table else pd.Series([""] * len(table), index=table.index)
    ax.set_xticks(x, [f"{g}\nn={n}" for g, n in zip(table.index, rows, strict=True)], fontsize=8)
    ax.set(ylabel="AUC", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def recall_curves(recall: dict[str, dict[int, float]], title: str = "recall@K per source") -> Figure:
    """One line per source over K (log scale): `{source: {K: recall}}` (analysis.recall_by_source)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for source, curve in recall.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], "o-", label=source)
    if any(len(c) > 1 for c in recall.values()):
        ax.set_xscale("log")
    ks = sorted({k for c in recall.values() for k in c})
    ax.set_xticks(ks, [f"{k:,}" for k in ks])  # the Ks the stage measured, not 10^1, 10^2
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(xlabel="K", ylabel="recall (valid)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def heatmap(table: pd.DataFrame, title: str, fmt: str = "{:.2f}") -> Figure:
    fig = Figure(figsize=(1.0 * len(table.columns) + 2.5, 0.8 * len(table) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(table.to_numpy(np.float64), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(table)), table.index)
    for (i, j), v in np.ndenumerate(table.to_numpy(np.float64)):
        ax.text(j, i, fmt.format(v), ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return fig


def scatter_2d(xy: np.ndarray, labels: Sequence[str], title: str) -> Figure:
    """Points coloured by label (legend by frequency): the item map."""
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    labels = np.asarray(labels)
    for name in pd.Series(labels).value_counts().index:
        pts = xy[labels == name]
        ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.6, label=f"{name} ({len(pts)})")
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    return fig


def cover_grid(paths: Sequence[str | None], titles: Sequence[str], cols: int = 6) -> Figure:
    """Item covers with their titles (a grey box where an item has no cover or it does not open)."""
    from PIL import Image  # pillow is already a dependency (covers in the embed stage)

    rows = max(1, -(-len(paths) // cols))
    fig = Figure(figsize=(1.9 * cols, 2.1 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for ax, path, title in zip(axes, paths, titles, strict=False):
        try:
            img = np.asarray(Image.open(path).convert("RGB")) if path else None
        except OSError:
            img = None
        ax.imshow(img if img is not None else np.full((8, 8, 3), 200, np.uint8))
        ax.set_title(str(title)[:28], fontsize=7)
    return fig


def sweep_history(trials: pd.DataFrame, title: str = "sweep") -> Figure:
    """A sweep's objective by trial number (analysis.sweep_trials): complete trials as dots, pruned ones
    where they stopped (crosses), failed ones as ticks on the axis, and the best complete value so far."""
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for state, style in (
        ("complete", dict(marker="o", color="tab:blue")),
        ("pruned", dict(marker="x", color="tab:grey")),
    ):
        d = trials[(trials["state"] == state) & trials["value"].notna()]
        if len(d):
            ax.scatter(d["trial"], d["value"].astype(np.float64), label=f"{state} ({len(d)})", **style)
    if "best_so_far" in trials and trials["best_so_far"].notna().any():
        ax.step(trials["trial"], trials["best_so_far"], where="post", color="tab:orange", label="best so far")
    failed = trials[trials["state"] == "fail"]
    if len(failed):
        ax.scatter(failed["trial"], np.full(len(failed), np.nan), marker="|")  # keeps the x range honest
        for x in failed["trial"]:
            ax.axvline(x, color="tab:red", alpha=0.25, lw=1)
        ax.plot([], [], color="tab:red", alpha=0.4, label=f"failed ({len(failed)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial", ylabel="valid (the objective)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig
