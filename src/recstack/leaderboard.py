"""The leaderboard: one row per model stage run that really ran (a stage skipped by the cache adds none),
appended to `outputs/<track>/<dataset>/<config>/leaderboard.csv` (paths.Paths.leaderboard) by the pipeline runner.

A model stage is one whose figures hold a valid metric (`valid_auc` for mmctr, `valid_score` for
tencentgr). Test metrics are computed here from the stage's predictions.parquet where the dataset builder
kept local labels (movielens, synthetic); they are shown, never used for a choice.
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf, open_dict

from recstack.artifacts import stable_hash, write_text
from recstack.config import RANK_MODELS, Config
from recstack.errors import DataError
from recstack.metrics import VALID_METRICS
from recstack.paths import Paths, Predictions
from recstack.report.analysis import board_view, cut_text

COLUMNS = (
    "time",
    "commit",
    "track",
    "dataset",
    "stage",
    "model",
    "metric",
    "valid",
    "test",
    "duration_s",
    "samples_per_s",
    "fingerprint",
    "config_diff",
    "valid_figures",
    "sweep",
)


def git_commit() -> str:
    """Short commit of the checkout this code runs from, "" where git or the repository is absent."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: obj}


IDENTITY_KEYS = ("track", "dataset")  # the row's own columns, not differences


def config_diff(conf: dict[str, Any]) -> dict[str, Any]:
    """The keys of a stage's config subset whose values differ from the schema defaults (the rankers'
    blocks, rank.<name>, included), but the track and the dataset: the row names them."""
    defaults = OmegaConf.structured(Config)
    with open_dict(defaults.rank):
        for name, settings in RANK_MODELS.items():
            defaults.rank[name] = OmegaConf.structured(settings)
    out = {}
    for key, value in _flatten(conf).items():
        if key in IDENTITY_KEYS:
            continue
        node = OmegaConf.select(defaults, key, default="<none>")
        default = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        if value != default:
            out[key] = value
    return out


TestMetric = Callable[[DictConfig, Path], "float | None"]  # a track's test figure of a stage folder


def test_metric(cfg: DictConfig, stage: str, score: TestMetric) -> float | None:
    """The stage's test figure from the local hidden labels as the track scores it (tracks/), if any."""
    try:
        return score(cfg, Paths(cfg).stage_dir(stage))
    except (DataError, FileNotFoundError, KeyError, ValueError, IndexError):
        return None  # no test predictions in that stage (or labels of another shape): nothing to show


def _prediction_rows(cfg: DictConfig, stage: str) -> int | None:
    path = Paths(cfg).stage_dir(stage) / Predictions.FILE
    return pq.read_metadata(path).num_rows if path.is_file() else None


def row(cfg: DictConfig, manifest: dict[str, Any], score: TestMetric) -> dict[str, Any] | None:
    """The leaderboard row of a finished stage's manifest, or None when it is not a model stage."""
    figures = manifest.get("figures", {})
    metric = next((m for m in VALID_METRICS if isinstance(figures.get(m), (int, float))), None)
    if metric is None:
        return None
    duration = float(manifest.get("duration_s", 0.0))
    speed = figures.get("train_samples_per_s")  # training throughput where the stage measured it
    if speed is None and duration > 0:  # else rows written (predicted) per second of the stage
        rows = figures.get("rows") or _prediction_rows(cfg, manifest["stage"])
        speed = rows / duration if rows else None
    others = {k: v for k, v in figures.items() if k.startswith("valid_") and isinstance(v, (int, float))}
    return {
        "time": manifest.get("finished_at", datetime.now(UTC).isoformat(timespec="seconds")),
        "commit": git_commit(),
        "track": cfg.track,
        "dataset": cfg.dataset,
        "stage": manifest["stage"],
        "model": str(figures.get("model", manifest["stage"])),
        "metric": metric,
        "valid": figures[metric],
        # the pipeline scored it into the manifest (Track.test_figures); scored here only for a manifest without
        "test": manifest["test"].get(f"test{metric[5:]}")
        if "test" in manifest
        else test_metric(cfg, manifest["stage"], score),
        "duration_s": round(duration, 2),
        "samples_per_s": None if speed is None else round(float(speed), 1),
        "fingerprint": stable_hash(manifest.get("config", {}))[:12],
        "config_diff": json.dumps(config_diff(manifest.get("config", {})), sort_keys=True),
        "valid_figures": json.dumps(others, sort_keys=True),
    }


def append(
    cfg: DictConfig, manifest: dict[str, Any], score: TestMetric, sweep: str = ""
) -> dict[str, Any] | None:
    """Append the stage's row (if it is a model stage); the header is written with the first row. `sweep`
    names the study and trial of a `./run.sh sweep` row ("" for an ordinary run)."""
    r = row(cfg, manifest, score)
    if r is None:
        return None
    r["sweep"] = sweep
    path = Paths(cfg).leaderboard
    path.parent.mkdir(parents=True, exist_ok=True)
    _upgrade(path)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open(
        "a", newline=""
    ) as f:  # one short append: no half-row survives an interruption in practice
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return r


def _upgrade(path: Path) -> None:
    """A leaderboard written with fewer columns (before `sweep`) gets them, empty, so rows stay aligned."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    if tuple(header) == COLUMNS:
        return
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = ""
    write_text(path, df[list(COLUMNS)].to_csv(index=False))


def read(cfg: DictConfig) -> pd.DataFrame:
    """The leaderboard, best valid metric first (ties: the most recent first)."""
    path = Paths(cfg).leaderboard
    if not path.is_file():
        raise DataError(f"{path}: no leaderboard yet; it fills as model stages run (./run.sh)")
    df = pd.read_csv(
        path, dtype={"commit": str}, keep_default_na=False, na_values={"valid": [""], "test": [""]}
    )
    if "sweep" not in df.columns:  # a leaderboard written before sweeps existed
        df["sweep"] = ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df.sort_values(["valid", "time"], ascending=[False, False], kind="stable", ignore_index=True)


NARROW = ("valid", "test", "metric", "stage", "model", "time", "commit", "duration_s")  # fits 100 columns
WIDE = (*NARROW, "samples_per_s", "fingerprint", "config_diff", "sweep")


def format_table(df: pd.DataFrame, wide: bool = False) -> str:
    """The leaderboard as text: within 100 columns (the model name cut at 30 characters, the time to the
    minute), or with `wide` every column (`./run.sh leaderboard --wide`)."""
    shown = board_view(df, WIDE if wide else NARROW, cut=40 if wide else 30, minute=not wide)
    shown["test"] = shown["test"].map(lambda v: "" if pd.isna(v) else f"{v:.5f}")
    shown["valid"] = shown["valid"].map(lambda v: f"{v:.5f}")
    if not wide:
        shown = shown.rename(columns={"duration_s": "seconds"})
    else:
        shown["config_diff"] = shown["config_diff"].map(lambda s: cut_text(s, 60))
    return shown.to_string(index=False, na_rep="")
