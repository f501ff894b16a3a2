"""Command line: `python -m recstack <stage|all|evaluate> [--config FILE] [--force] [key=value ...]`.

run.sh wraps it: `./run.sh` runs `all` on the default configs, `./run.sh <stage>` one stage (after its
upstream stages, each skipped when unchanged).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from recstack import leaderboard
from recstack.artifacts import write_text
from recstack.config import ConfigError, load_config, to_yaml
from recstack.config_doc import keys_markdown
from recstack.errors import DataError, WriteError
from recstack.metrics import VALID_METRICS
from recstack.paths import Paths
from recstack.pipeline import pipeline_of, run_until
from recstack.report.html import write_report
from recstack.sweep import run_sweep
from recstack.tracks import TRACKS, track_of

DEFAULT_CONFIG = "configs/mmctr_movielens.yaml"
DEFAULT_CONFIGS = (DEFAULT_CONFIG, "configs/tencentgr_movielens.yaml")  # what `./run.sh` runs
log = logging.getLogger("recstack")


def _stage_help() -> str:
    lines = ["stages (run in this order by `all`):"]
    for track in TRACKS:
        stages = pipeline_of(track)
        lines.append(f"  track {track}:")
        lines += [f"    {s.name:<10} {s.help}" for s in stages.values()]
    lines += [
        "other commands:",
        "    all        every stage of the config's track (a bare ./run.sh runs it on both default configs)",
        "    evaluate   score a submission file against the local ground truth: evaluate <file>",
        "    leaderboard  every model stage run of the config's track / dataset, best valid metric first",
        "    report     write outputs/<track>/<dataset>/<config>/report.html (figures, plots, leaderboard); without",
        "               --config, one page per default config (both tracks)",
        "    sweep      Optuna search over config keys: sweep --space SPACE.yaml [--trials N] [--jobs J]",
        "               [--study NAME] (configs/sweeps/; resumable; docs/sweeps.md)",
        "    keys       every config key: default, allowed values, what it does (docs/config_keys.md)",
        "    lab        (./run.sh lab) JupyterLab on notebooks/ with the project's kernel",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="./run.sh",
        description="recstack: multimodal recommendation competition workspace",
        epilog=_stage_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", help="a stage, `all`, `evaluate`, `leaderboard`, `report`, `sweep` or `keys`")
    p.add_argument("args", nargs="*", help="key=value config overrides (evaluate: the submission file first)")
    p.add_argument("--config", "-c", default=None, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--force", action="store_true", help="redo the stage even if inputs and config are unchanged"
    )
    p.add_argument("--wide", action="store_true", help="leaderboard: every column (default: within 100)")
    p.add_argument("--space", default=None, help="sweep: the search space YAML (configs/sweeps/)")
    p.add_argument("--trials", type=int, default=20, help="sweep: finished trials the study should hold")
    p.add_argument("--jobs", type=int, default=1, help="sweep: worker processes on the one study")
    p.add_argument("--study", default=None, help="sweep: study name (default: the space file's name)")
    return p


def setup_logging(paths: Paths, command: str) -> Path:
    paths.logs_dir.mkdir(parents=True, exist_ok=True)
    logfile = paths.logs_dir / f"{datetime.now():%Y%m%d-%H%M%S}-{command}.log"
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for h in (logging.StreamHandler(sys.stderr), logging.FileHandler(logfile)):
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(logging.INFO)
    return logfile


def evaluate(cfg, submission: str) -> dict[str, float]:
    """Score a submission against the answers kept aside by our dataset builders (movielens, synthetic)."""
    return track_of(cfg).evaluate(cfg, submission)


def report(configs: list[str], overrides: list[str]) -> list[Path]:
    """One static page per run folder: the run folder of each config."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pages = []
    for config in configs:
        cfg = load_config(config, overrides)
        track_of(cfg)  # an unknown track: the error names the known ones
        page, counts = write_report(Paths(cfg), list(pipeline_of(cfg.track)))
        print(
            f"{page}  ({counts['stages']} stages, {counts['images']} images, "
            f"{counts['leaderboard_rows']} leaderboard rows)"
        )
        pages.append(page)
    return pages


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    try:
        if args.command == "keys":
            print(keys_markdown(), end="")
            return 0
        if args.command == "report":
            report([args.config] if args.config else list(DEFAULT_CONFIGS), list(args.args))
            return 0
        args.config = args.config or DEFAULT_CONFIG
        overrides = list(args.args)
        submission = None
        if args.command == "evaluate":
            if not overrides or "=" in overrides[0]:
                raise ConfigError(
                    "evaluate needs the submission file: ./run.sh evaluate <file> [--config FILE]"
                )
            submission = overrides.pop(0)
        cfg = load_config(args.config, overrides)
        track_of(cfg)  # an unknown track: the error names the known ones
        if args.command == "sweep":
            if not args.space:
                raise ConfigError(
                    "sweep needs the search space: ./run.sh sweep --space configs/sweeps/<file>.yaml"
                )
            setup_logging(Paths(cfg), "sweep")
            result = run_sweep(args.config, overrides, args.space, args.trials, args.jobs, args.study)
            for k, v in result.items():
                print(f"{k}: {v}")
            return 0
        if args.command == "leaderboard":
            board = leaderboard.read(cfg)
            print(f"== leaderboard {Paths(cfg).leaderboard} ({len(board)} runs, best valid first) ==")
            print(leaderboard.format_table(board, wide=args.wide))
            return 0
        paths = Paths(cfg)
        logfile = setup_logging(paths, args.command)
        log.info("config %s (%s / %s), log %s", args.config, cfg.track, cfg.dataset, logfile)
        write_text(paths.resolved_config, to_yaml(cfg))
        if submission is not None:
            scores = evaluate(cfg, submission)
            for k, v in scores.items():
                print(f"{k}: {v:.6f}" if k != "rows" else f"{k}: {int(v)}")
            return 0
        t0 = time.perf_counter()
        stage = None if args.command == "all" else args.command
        manifests = run_until(cfg, stage, force=args.force)
        _summary(cfg, paths, manifests, time.perf_counter() - t0)
        return 0
    except (ConfigError, DataError, WriteError) as e:
        return _fail(e)
    except OSError as e:  # a write outside the artifact layer (the log folder, a builder's input folder)
        failure = WriteError.of(e)
        if failure is None:
            raise
        return _fail(failure)


def _fail(e: Exception) -> int:
    """One error line (in the run's log too, where it can still be written) and exit status 2."""
    if isinstance(e, WriteError):
        logging.raiseExceptions = False  # the log file may be on the full / read-only disk: no second error
    if logging.getLogger().handlers:
        log.error("%s", e)  # also lands in the run's log file
    else:
        print(f"error: {e}", file=sys.stderr)
    return 2


def summary_lines(title: str, manifests: dict, submission: str | None) -> list[str]:
    """The end-of-run summary: one aligned row per stage (model, its validated figure, the local test where the
    builder kept the answers, time), at most 100 columns; every other figure is in the stage's manifest."""
    lines = [title, f"  {'stage':<20} {'model':<30} {'metric':<11} {'valid':>8} {'test':>8} {'time':>8}"]
    for name, m in manifests.items():
        if not m:
            lines.append(f"  {name:<20} skipped (data.source=raw)")
            continue
        figs, tests = m.get("figures", {}), m.get("test", {})
        metric = next((k for k in VALID_METRICS if isinstance(figs.get(k), (int, float))), None)
        model = str(figs.get("model", name)) if metric else ""
        if name == "ensemble" and figs.get("submitted"):
            model = f"submitted: {figs['submitted']}"
        model = model if len(model) <= 30 else model[:27] + "..."
        valid = f"{figs[metric]:.4f}" if metric else ""
        test = tests.get(f"test{metric[5:]}") if metric else None
        shown = f"{test:.4f}" if isinstance(test, (int, float)) else ""
        seconds = f"{float(m.get('duration_s', 0.0)):.1f}s"
        label = (metric or "").removeprefix("valid_")
        lines.append(f"  {name:<20} {model:<30} {label:<11} {valid:>8} {shown:>8} {seconds:>8}")
    if submission:
        lines.append(f"  submission: {submission}")
    return lines


def _summary(cfg, paths: Paths, manifests: dict, seconds: float) -> None:
    ens = manifests.get("ensemble") or {}
    submission = None
    if ens.get("figures", {}).get("submission"):
        submission = str(paths.stage_dir("ensemble") / ens["figures"]["submission"])
    title = f"\n== {cfg.track} / {cfg.dataset}: {len(manifests)} stage(s) in {seconds:.1f}s =="
    print("\n".join(summary_lines(title, manifests, submission)))


if __name__ == "__main__":
    raise SystemExit(main())
