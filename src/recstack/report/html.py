"""`./run.sh report`: one static HTML page per run folder (outputs/<track>/<dataset>/report.html).

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

import pandas as pd

from recstack.artifacts import write_text
from recstack.paths import Paths, Reports, Retrieved
from recstack.report import analysis, plots

log = logging.getLogger(__name__)

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 12px; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: .5em 0; }
h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
.meta { color: #666; font-size: 12px; }
"""


def _img(b64: str, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"><figcaption class="meta">{html.escape(alt)}</figcaption></figure>'


def _table(df: pd.DataFrame, index: bool = True) -> str:
    return df.to_html(index=index, border=0, float_format=lambda v: f"{v:.5g}", na_rep="")


def stage_section(name: str, manifest: dict[str, Any], folder: Path) -> tuple[str, int]:
    """HTML of one stage and the number of images in it."""
    parts = [f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>',
             f'<p class="meta">finished {html.escape(str(manifest.get("finished_at", "?")))} in '
             f'{manifest.get("duration_s", "?")} s; key {html.escape(str(manifest.get("key", "")))}</p>']  # fmt: skip
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
    report_path = folder / Retrieved.REPORT
    if report_path.is_file():
        report = json.loads(report_path.read_text())
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
        parts.append(_img(plots.png_base64(plots.bars(top, f"{name}: importance ({top.name})")),
                          f"{name}: feature importances"))  # fmt: skip
        images += 1
    figures = analysis.flat_figures(manifest.get("figures") or {})
    if figures:
        df = pd.DataFrame({"figure": list(figures), "value": [str(v) for v in figures.values()]})
        parts.append("<h3>figures</h3>" + _table(df, index=False))
    return "\n".join(parts), images


def build_page(paths: Paths, order: list[str] | None = None) -> tuple[str, dict[str, int]]:
    """The page of one run folder, and counts of what it holds (stages, images, leaderboard rows); stages in
    the pipeline's `order` when given."""
    run_dir = paths.run_dir
    manifests = analysis.read_manifests(run_dir, order)
    title = f"recstack {paths.cfg.track} / {paths.cfg.dataset}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="meta">{html.escape(str(run_dir))}, written {datetime.now():%Y-%m-%d %H:%M}</p>']  # fmt: skip
    counts = {"stages": len(manifests), "images": 0, "leaderboard_rows": 0}
    if paths.leaderboard.is_file():
        board = pd.read_csv(paths.leaderboard)
        counts["leaderboard_rows"] = len(board)
        shown = board.drop(columns=[c for c in ("valid_figures", "config_diff") if c in board.columns])
        if "valid" in shown.columns:  # best first (both tracks' valid metrics are higher-is-better)
            shown = shown.sort_values("valid", ascending=False, kind="stable")
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
    for name, manifest in manifests.items():
        section, n = stage_section(name, manifest, run_dir / name)
        body.append(section)
        counts["images"] += n
    if paths.resolved_config.is_file():
        cfg_text = html.escape(paths.resolved_config.read_text())
        body.append(f"<h2>config</h2><details><summary>config.yaml</summary><pre>{cfg_text}</pre></details>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip
    return page, counts


def write_report(paths: Paths, order: list[str] | None = None) -> tuple[Path, dict[str, int]]:
    """Write the run folder's report.html; returns its path and what it holds."""
    page, counts = build_page(paths, order)
    write_text(paths.report_page, page)
    log.info("report %s: %d stages, %d images, %d leaderboard rows", paths.report_page, counts["stages"],
             counts["images"], counts["leaderboard_rows"])  # fmt: skip
    return paths.report_page, counts
