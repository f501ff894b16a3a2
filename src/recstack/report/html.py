"""`./run.sh report`: one static HTML page per run folder (outputs/<track>/<dataset>/<config>/report.html).

Self-contained: images are embedded as base64 PNG, so the page opens from disk, can be mailed or archived,
and needs no server. It shows the leaderboard (when the run has one), then every finished stage in the order
it ran: its figures as a table and its plots (the PNGs under its `reports/` folder; learning curves from
curve.csv, recall@K and per-source scores from retrieval.json, the stacker's importances, drawn here when
the stage did not save them).
"""

from __future__ import annotations

import base64
import html
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recstack.artifacts import write_text
from recstack.metrics import VALID_METRICS
from recstack.paths import Paths, Reports, Retrieved
from recstack.report import analysis, plots

log = logging.getLogger(__name__)

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 960px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 12px; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; overflow-wrap: anywhere; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: .5em 0; }
h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
.meta { color: #666; font-size: 12px; }
"""


def _img(b64: str, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"><figcaption class="meta">{html.escape(alt)}</figcaption></figure>'


def fmt(v: Any) -> str:
    """A figure for reading: thousands separators from 1,000 on (653,330 samples/s, not 6.5333e+05), five
    significant digits below (0.89583 AUC), integers as integers, "" for a missing value."""
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        return "" if v is None else str(v)
    if pd.isna(v):
        return ""
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.5g}"


def _table(df: pd.DataFrame, index: bool = True) -> str:
    shown = df.map(fmt)
    if index:
        shown.index = shown.index.map(fmt)
    return shown.to_html(index=index, border=0, na_rep="")


def _shown(key: str, drawn: str) -> bool:
    """`key` is what `drawn` names: the key itself, a prefix ending in ".", or valid_*_<source>."""
    if drawn.startswith("valid_*_"):
        return key.startswith("valid_") and key.endswith("_" + drawn.removeprefix("valid_*_"))
    return key == drawn or (drawn.endswith(".") and key.startswith(drawn))


def stage_section(
    name: str, manifest: dict[str, Any], folder: Path, calibration: dict[str, pd.DataFrame] | None = None
) -> tuple[str, int]:
    """HTML of one stage and the number of images in it (`calibration`: reliability tables to draw in it)."""
    parts = [
        f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>',
        f'<p class="meta">finished {html.escape(str(manifest.get("finished_at", "?")))} in '
        f"{manifest.get('duration_s', '?')} s; key {html.escape(str(manifest.get('key', '')))}</p>",
    ]
    images = 0
    saved = sorted((folder / Reports.DIR).glob("*.png"))
    for png in saved:
        parts.append(_img(base64.b64encode(png.read_bytes()).decode("ascii"), f"{name}: {png.name}"))
        images += 1
    names = {p.name for p in saved}
    curve = analysis.read_curve(folder)
    if curve is not None and Reports.LEARNING_CURVE not in names:
        parts.append(_img(plots.png_base64(plots.learning_curves(curve, name)), f"{name}: learning curves"))
        images += 1
    drawn: list[str] = []  # figures a chart or table of this section shows: left out of its table
    report_path = folder / Retrieved.REPORT
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        # valid_<figure>_<source>: what the recall and per-source tables below show
        drawn += [f"valid_*_{s}" for s in report.get("per_source") or {}]
        recall = analysis.recall_by_source(report)
        if recall and Reports.RECALL not in names:
            parts.append(_img(plots.png_base64(plots.recall_curves(recall)), f"{name}: recall@K per source"))
            images += 1
        if recall:
            parts.append("<h3>recall@K (valid)</h3>" + _table(pd.DataFrame(recall).T.sort_index(axis=1)))
        scores = analysis.source_scores(report)
        if len(scores):
            parts.append("<h3>each source's own top-10 (valid)</h3>" + _table(scores))
    importances = analysis.stack_importances(manifest)
    if importances is not None:
        top = importances.head(30)
        parts.append(
            _img(
                plots.png_base64(plots.bars(top, f"{name}: importance ({top.name})")),
                f"{name}: feature importances",
            )
        )
        images += 1
        drawn.append(f"{importances.name}.")
    weights = analysis.modality_weights(manifest)
    if len(weights) and {"weight", "coverage", "dim"} <= set(weights.columns):
        fig = plots.embed_summary(weights, analysis.alignment_curve(manifest), name)
        parts.append(_img(plots.png_base64(fig), f"{name}: modality weights, coverage and alignment"))
        images += 1
        drawn += ["modalities.", "align.holdout_loss_by_epoch"]
    blend = analysis.ensemble_weights(manifest)
    if blend is not None:
        fig = plots.bars(
            blend,
            f"{name}: blend weights ({manifest['figures'].get('method', '')})",
            "weight",
            annotate=blend.map(lambda w: f"{w:.3f}"),
        )
        parts.append(_img(plots.png_base64(fig), f"{name}: blend weights"))
        images += 1
        drawn += ["weights", "sources"]
    for metric in VALID_METRICS:
        alone = analysis.feature_aucs(manifest, metric)
        if (
            alone is not None and importances is None and not report_path.is_file()
        ):  # mmctr retrieve's features;
            # the ensemble's candidates (tencentgr retrieve's sources: the tables above)
            label = metric.removeprefix("valid_")
            what = "candidate (sources, blend)" if blend is not None else "feature alone"
            fig = plots.bars(
                alone,
                f"{name}: valid {label} of each {what}",
                label,
                annotate=alone.map(lambda v: f"{v:.4f}"),
            )
            lo = float(alone.min())
            fig.axes[0].set_xlim(max(0.0, lo - 0.05), min(1.0, float(alone.max()) + 0.05))
            parts.append(_img(plots.png_base64(fig), f"{name}: valid {label} of each {what}"))
            images += 1
            drawn += [f"{metric}_{k}" for k in alone.index]
    if calibration is not None:
        what = "calibration (valid)" if list(calibration) == [name] else "calibration of every model (valid)"
        fig = plots.calibration_plot(calibration, what)
        parts.append(_img(plots.png_base64(fig), f"{name}: {what}"))
        images += 1
    figures = {
        k: v
        for k, v in analysis.flat_figures(manifest.get("figures") or {}).items()
        if not any(_shown(k, d) for d in drawn)
    }
    if figures:
        df = pd.DataFrame({"figure": list(figures), "value": [fmt(v) for v in figures.values()]})
        parts.append("<h3>figures</h3>" + _table(df, index=False))
    return "\n".join(parts), images


PAGE_BOARD = {
    "stage": "stage",
    "model": "model",
    "metric": "metric",
    "valid": "valid",
    "test": "local test",
    "duration_s": "seconds",
    "samples_per_s": "samples/s",
    "sweep": "sweep",
    "time": "time",
    "commit": "commit",
}


def leaderboard_table(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as the page shows it, best valid first, in the columns that fit 1,000 px (model names cut
    at 30 characters, the time to the minute, no empty sweep column; the config diffs and every valid figure
    stay in leaderboard.csv and `./run.sh leaderboard --wide`)."""
    shown = analysis.board_view(board, PAGE_BOARD)
    if "valid" in shown.columns:  # best first (both tracks' valid metrics are higher-is-better)
        shown = shown.sort_values("valid", ascending=False, kind="stable")
    if "sweep" in shown.columns and shown["sweep"].map(fmt).eq("").all():
        shown = shown.drop(columns="sweep")
    return shown.rename(columns=PAGE_BOARD)


def sweep_section(db: Path) -> tuple[str, int]:
    """HTML of one sweep study (`<run>/sweeps/<study>.db`): its summary, history and parameter importances,
    drawn from the study's database (so the page shows trials a running sweep has finished since), and
    its ten best trials."""
    study = db.stem
    parts = [f'<h2 id="sweep-{html.escape(study)}">sweep {html.escape(study)}</h2>']
    trials = analysis.sweep_trials(db)
    summary = analysis.sweep_summary(db, trials)
    parts.append(_table(summary.to_frame("value").rename_axis("sweep"), index=True))
    if trials.empty:
        return "\n".join(parts), 0
    images = 1
    parts.append(
        _img(plots.png_base64(plots.sweep_history(trials, f"sweep {study}")), f"sweep {study}: history")
    )
    importances = analysis.sweep_importances(db)
    if importances is not None:
        fig = plots.bars(importances, f"sweep {study}: parameter importance (fANOVA)", "share of variance")
        parts.append(_img(plots.png_base64(fig), f"sweep {study}: parameter importance"))
        images += 1
    done = trials[trials["state"] == "complete"].sort_values("value", ascending=False).head(10)
    if len(done):
        cols = ["trial", "value", "seconds"] + [c for c in done.columns if c.startswith("param.")]
        parts.append("<h3>best complete trials (valid)</h3>" + _table(done[cols], index=False))
    return "\n".join(parts), images


def build_page(paths: Paths, order: list[str] | None = None) -> tuple[str, dict[str, int]]:
    """The page of one run folder, and counts of what it holds (stages, images, leaderboard rows); stages in
    the pipeline's `order` when given."""
    run_dir = paths.run_dir
    manifests = analysis.read_manifests(run_dir, order)
    title = f"recstack {paths.cfg.track} / {paths.cfg.dataset}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(str(run_dir))}, written {datetime.now():%Y-%m-%d %H:%M}</p>',
    ]
    counts = {"stages": len(manifests), "images": 0, "leaderboard_rows": 0}
    if paths.leaderboard.is_file():
        board = pd.read_csv(paths.leaderboard)
        counts["leaderboard_rows"] = len(board)
        shown = leaderboard_table(board)
        body.append('<h2 id="leaderboard">leaderboard</h2>' + _table(shown, index=False))
    else:
        body.append(
            f'<p class="meta">no leaderboard yet ({html.escape(paths.leaderboard.name)} not found)</p>'
        )
    if manifests:
        links = " · ".join(f'<a href="#{html.escape(s)}">{html.escape(s)}</a>' for s in manifests)
        body.append(f"<p>stages: {links}</p>")
    else:
        body.append("<p>no finished stage in this run folder yet: run <code>./run.sh</code> first.</p>")
    calibration = analysis.run_calibration(run_dir, manifests) if paths.cfg.track == "mmctr" else {}
    # each model's calibration in its section, and every model's together in the section of the last of them
    # (the ensemble on a full run)
    last = list(calibration)[-1] if calibration else None
    for name, manifest in manifests.items():
        own = {name: calibration[name]} if name in calibration and name != last else None
        section, n = stage_section(name, manifest, run_dir / name, calibration if name == last else own)
        body.append(section)
        counts["images"] += n
    for db in analysis.sweep_studies(run_dir):
        section, n = sweep_section(db)
        body.append(section)
        counts["images"] += n
    if paths.resolved_config.is_file():
        cfg_text = html.escape(paths.resolved_config.read_text())
        body.append(f"<h2>config</h2><details><summary>config.yaml</summary><pre>{cfg_text}</pre></details>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    return page, counts


def write_report(paths: Paths, order: list[str] | None = None) -> tuple[Path, dict[str, int]]:
    """Write the run folder's report.html; returns its path and what it holds."""
    page, counts = build_page(paths, order)
    write_text(paths.report_page, page)
    log.info(
        "report %s: %d stages, %d images, %d leaderboard rows",
        paths.report_page,
        counts["stages"],
        counts["images"],
        counts["leaderboard_rows"],
    )
    return paths.report_page, counts
