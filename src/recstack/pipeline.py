"""Stage runner: each stage is `run(ctx) -> figures`, reads only earlier stages' folders, writes its own.
Which stages a track has, in which order, and what they read optionally comes from its module in tracks/
(`TRACKS`); the runner itself knows no track.

A stage's folder is built under a temporary name and swapped in only when the stage has finished and its
manifest (written last) is in place, so an interrupted stage never looks finished. A stage whose inputs
(upstream manifests, raw files) and config subset are unchanged is skipped and says so; `force` redoes it.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recstack import __version__, leaderboard
from recstack.artifacts import atomic_dir, file_fingerprint, link_tree, stable_hash, write_json
from recstack.config import subset
from recstack.device import deterministic_mode
from recstack.errors import DataError
from recstack.paths import LOCK, MANIFEST, Paths
from recstack.stages.context import StageContext
from recstack.tracks import Stage, track_of
from recstack.train import dist

__all__ = ["Stage", "pipeline_of", "run_stage", "run_until", "stages_for"]

log = logging.getLogger("recstack")


def pipeline_of(track: str) -> dict[str, Stage]:
    """A track's stages in run order (tracks/: its module lists them, mmctr adds one per registered ranker)."""
    return track_of(track).pipeline()


def stages_for(cfg: DictConfig) -> dict[str, Stage]:
    return pipeline_of(cfg.track)


def needs_of(cfg: DictConfig, stage: Stage) -> tuple[str, ...]:
    """The stages `stage` reads under `cfg` (declared on the Stage by its track)."""
    return stage.upstream(cfg, stages_for(cfg))


def _imports(path: Path) -> set[str]:
    """Names of the recstack modules a source file imports (`from recstack.x import y` may name a module y)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("recstack")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recstack"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


# Plots only: a stage that saves a figure (rank's learning curves) does not rerun when a plot's style changes
NOT_IN_CODE_KEY = ("recstack.report",)


@functools.cache
def module_closure(module: str) -> tuple[Path, ...]:
    """Source files of `module` and of every recstack module it imports, transitively (sorted by name);
    presentation modules (NOT_IN_CODE_KEY) left out: no later stage reads what they draw."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name.startswith(NOT_IN_CODE_KEY):
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # `from recstack.x import function`: not a module
            spec = None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        seen[name] = Path(spec.origin)
        todo += sorted(_imports(seen[name]) - set(seen))
    return tuple(seen[name] for name in sorted(seen))


def _code_fingerprint(stage: Stage) -> str:
    """The source of every package module the stage runs: editing models/din.py reruns rank_din (a stage
    keyed on its own file alone would be skipped with a stale model)."""
    h = hashlib.sha256()
    for path in module_closure(stage.run.__module__):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def content_fingerprint(folder: Path) -> str:
    """sha256 over a finished stage folder's files (names and bytes; the manifest excluded)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
    return h.hexdigest()[:16]


def remove_stale(out_dir: Path) -> list[str]:
    """Temporary / replaced folders of `out_dir` left by a killed run (kill -9 skips every `finally`).
    Called under the run lock, so no live run owns them."""
    stale = [*out_dir.parent.glob(f".{out_dir.name}.tmp-*"), *out_dir.parent.glob(f".{out_dir.name}.old-*")]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return [p.name for p in stale]


_HELD: dict[Path, int] = {}  # run folders this process has locked, with nesting depth


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One run per output folder at a time: a second `./run.sh` on the same folder stops with a clear
    message instead of racing the first (both writing, the last rename winning, one log for two runs)."""
    run_dir = run_dir.resolve()
    if _HELD.get(run_dir):
        _HELD[run_dir] += 1
        try:
            yield
        finally:
            _HELD[run_dir] -= 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            raise DataError(
                f"{run_dir} is in use by another recstack run ({owner}); wait for it to finish, or use another "
                "output_root, dataset or run_name for a parallel run"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        _HELD[run_dir] = 1
        try:
            yield
        finally:
            _HELD.pop(run_dir, None)
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def link_finished(paths: Paths, name: str, key: str) -> tuple[dict[str, Any], Path] | None:
    """Stage `name` finished with this `key` in another run folder of the same track and data set (another
    config that agrees on everything the stage reads): linked into this run folder instead of recomputed, with
    its manifest, and checked against the manifest's content fingerprint (a folder the other run is replacing
    meanwhile is not taken). Returns (manifest, the folder linked from), or None."""
    here = paths.run_dir.resolve()
    runs = paths.data_runs_dir
    for other in sorted(runs.iterdir()) if runs.is_dir() else []:
        donor = other / name
        if (
            other.resolve() == here
            or (manifest := read_manifest(donor)) is None
            or manifest.get("key") != key
        ):
            continue
        out_dir = paths.stage_dir(name)
        try:
            with atomic_dir(out_dir) as tmp:
                link_tree(donor, tmp)
                if content_fingerprint(tmp) != manifest.get("content") or read_manifest(tmp) != manifest:
                    raise _Changed
        except (_Changed, OSError):
            continue
        return manifest, donor
    return None


class _Changed(Exception):
    """A stage folder changed while it was being linked."""


def run_stage(cfg: DictConfig, name: str, force: bool = False) -> dict[str, Any]:
    """Run one stage (its upstream stages must be done). Returns its manifest."""
    if dist.rank() > 0:  # torchrun workers write nothing: rank 0 holds the lock
        return _run_stage(cfg, name, force)
    paths = Paths(cfg)
    # build writes input/<dataset>/, which every run folder of the data set reads: one build at a time
    with (
        run_lock(paths.data_runs_dir) if name == "build" else contextlib.nullcontext(),
        run_lock(paths.run_dir),
    ):
        return _run_stage(cfg, name, force)


def _run_stage(cfg: DictConfig, name: str, force: bool) -> dict[str, Any]:
    stages = stages_for(cfg)
    if name not in stages:
        raise DataError(f"unknown stage {name!r} for track {cfg.track}; stages: {', '.join(stages)}")
    stage, paths = stages[name], Paths(cfg)
    if name == "build" and cfg.data.source == "raw":
        log.info("[build] data.source=raw: using the files under %s as they are", paths.raw_dir)
        return {}
    inputs: dict[str, str] = {}
    for up in needs_of(cfg, stage):
        if up not in stages:
            raise DataError(f"stage {name} needs {up!r}, which is not a stage of track {cfg.track}")
        manifest = read_manifest(paths.stage_dir(up))
        if manifest is None:
            raise DataError(f"stage {name} needs stage {up}, which has not finished: run `./run.sh {up}`")
        # what the upstream stage produced, not its key: a forced rerun with new content reruns this stage,
        # an unchanged rerun (e.g. after `touch` on the raw input) does not
        inputs[up] = manifest.get("content") or manifest["key"]
    if stage.reads_raw:
        inputs["raw"] = file_fingerprint(paths.raw_dir)
        if paths.eval_dir is not None:  # the parquet release's evaluation folder, given apart
            inputs["eval"] = file_fingerprint(paths.eval_dir)
    conf = subset(cfg, stage.config_keys)
    key = stable_hash({"stage": name, "config": conf, "inputs": inputs, "code": _code_fingerprint(stage)})
    out_dir = paths.stage_dir(name)
    old = read_manifest(out_dir)
    if not force and old is not None and old.get("key") == key:
        log.info("[%s] skipped: inputs and config unchanged (%s; --force redoes it)", name, out_dir)
        return old
    shared = None if force or name == "build" or dist.rank() > 0 else link_finished(paths, name, key)
    if shared is not None:
        manifest, donor = shared
        log.info(
            "[%s] linked from %s: the same inputs, config and code (--force reruns it here)", name, donor
        )
        leaderboard.append(cfg, manifest, track_of(cfg).test_metric)
        return manifest
    if dist.rank() > 0:  # torchrun worker: trains alongside rank 0 in a scratch folder; rank 0 writes
        if stage.distributed:
            with tempfile.TemporaryDirectory() as tmp, deterministic_mode(bool(cfg.deterministic)):
                stage.run(StageContext(cfg, paths, Path(tmp)))
        return {}
    removed = remove_stale(out_dir)
    if removed:
        log.info("[%s] removed %d folder(s) left by an interrupted run: %s", name, len(removed), removed)
    log.info("[%s] running -> %s", name, out_dir)
    t0 = time.perf_counter()
    with atomic_dir(out_dir) as tmp, deterministic_mode(bool(cfg.deterministic)):
        figures = stage.run(StageContext(cfg, paths, tmp)) or {}
        manifest = {
            "stage": name,
            "key": key,
            "content": content_fingerprint(tmp),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - t0, 3),
            "inputs": {**inputs, **({"raw_dir": str(paths.raw_dir)} if stage.reads_raw else {})},
            "config": conf,
            "figures": figures,
            "files": {p.name: p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()},
            "recstack": __version__,
        }
        # the local test beside the valid figures, where the dataset builder kept the answers (tracks/): scored
        # here, after the stage's body, so that no stage reads the answers
        tests = _test_figures(cfg, name, tmp, figures)
        if tests:
            manifest["test"] = tests
        write_json(tmp / MANIFEST, manifest)  # last: its presence means the stage finished
    log.info("[%s] done in %.1fs: %s", name, manifest["duration_s"], _short(figures))
    if tests:
        log.info("[%s] local test: %s", name, _short(tests))
    # a model stage that really ran (a skipped one returned above); its test figure as the track scores it
    leaderboard.append(cfg, manifest, track_of(cfg).test_metric)
    return manifest


def _test_figures(cfg: DictConfig, name: str, folder: Path, figures: dict[str, Any]) -> dict[str, float]:
    try:
        return track_of(cfg).test_figures(cfg, folder, figures)
    except (
        DataError,
        OSError,
        KeyError,
        ValueError,
        IndexError,
    ) as e:  # answers of another shape: none shown
        log.warning("[%s] no local test figures: %s", name, e)
        return {}


def upstream_closure(cfg: DictConfig, name: str) -> list[str]:
    """`name` and every stage it depends on, in run order."""
    stages = stages_for(cfg)
    seen: list[str] = []

    def visit(n: str) -> None:
        if n not in stages:
            raise DataError(f"unknown stage {n!r} for track {cfg.track}; stages: {', '.join(stages)}")
        for up in needs_of(cfg, stages[n]):
            visit(up)
        if n not in seen:
            seen.append(n)

    visit(name)
    order = list(stages)
    return sorted(seen, key=order.index)


def run_until(cfg: DictConfig, name: str | None = None, force: bool = False) -> dict[str, dict[str, Any]]:
    """Run `name` after its upstream stages (each skipped when unchanged); `None` runs the whole pipeline.

    `force` applies to the named stage only (to every stage when running the whole pipeline).
    """
    names = list(stages_for(cfg)) if name is None else upstream_closure(cfg, name)
    dist.setup(cfg.device)  # under torchrun: join the process group (no-op for one process)
    out = {}
    for n in names:
        lacking = [up for up in needs_of(cfg, stages_for(cfg)[n]) if up not in stages_for(cfg)]
        if name is None and lacking:  # e.g. the tencentgr stack without a retrieve stage in the track
            log.warning(
                "[%s] not run: it needs stage(s) %s, which track %s does not have",
                n,
                ", ".join(lacking),
                cfg.track,
            )
            continue
        out[n] = run_stage(cfg, n, force=force and (name is None or n == name))
        dist.barrier()  # under torchrun the next stage starts once rank 0 has written this one
    return out


def _short(figures: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()]
    return ", ".join(parts[:8]) or "-"
