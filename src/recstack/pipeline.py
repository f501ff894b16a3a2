"""Stage runner: each stage is `run(ctx) -> figures`, reads only earlier stages' folders, writes its own.

A stage's folder is built under a temporary name and swapped in only when the stage has finished and its
manifest (written last) is in place, so an interrupted stage never looks finished. A stage whose inputs
(upstream manifests, raw files) and config subset are unchanged is skipped and says so; `force` redoes it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recstack import __version__
from recstack.artifacts import atomic_dir, file_fingerprint, stable_hash, write_json
from recstack.config import subset
from recstack.errors import DataError
from recstack.paths import MANIFEST, Paths
from recstack.stages import baseline, build, embed, ensemble, prepare, rank, seqrec
from recstack.stages.context import StageContext
from recstack.train import dist

log = logging.getLogger("recstack")


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], dict[str, Any]]
    needs: tuple[str, ...]
    config_keys: tuple[str, ...]
    help: str
    reads_raw: bool = False  # fingerprint the raw input folder
    distributed: bool = False  # under torchrun every rank runs it (DDP training); rank 0 alone writes


# ---- registry: one pipeline per track, stages in run order -------------------------------------------
_SHARED = ("track", "dataset", "seed")
PIPELINES: dict[str, dict[str, Stage]] = {
    "mmctr": {
        "build": Stage(
            "build", build.run_mmctr, (), (*_SHARED, "data"),
            "build the raw mmctr layout for data.source=movielens|synthetic under input/<dataset>/",
        ),
        "prepare": Stage(
            "prepare", prepare.run_mmctr, ("build",), (*_SHARED, "data.max_hist"),
            "read and check the raw layout; write canonical item and sample tables", reads_raw=True,
        ),
        "embed": Stage(
            "embed", embed.run_mmctr, ("prepare",), (*_SHARED, "device", "embed"),
            "text / image encoders + provided embeddings -> fused, behaviour-aligned item vectors; Task 1 export",
        ),
        "baseline": Stage(
            "baseline", baseline.run_mmctr, ("prepare",), (*_SHARED, "baseline"),
            "CTR priors + history co-clicks, logistic regression: OOF/valid/test predictions",
        ),
        "rank_din": Stage(
            "rank_din", rank.run_din, ("prepare",), (*_SHARED, "rank.multimodal", "rank.provided",
            "rank.folds", "rank.epochs", "rank.patience", "rank.lr_decay", "rank.din"),
            "DIN ranker (item encoder + target attention + MLP): OOF/valid/test predictions, checkpoint",
            distributed=True,
        ),
        "rank_qin": Stage(
            "rank_qin", rank.run_qin, ("prepare",), (*_SHARED, "rank.multimodal", "rank.provided",
            "rank.folds", "rank.epochs", "rank.patience", "rank.lr_decay", "rank.qin"),
            "QIN ranker (sparse target attention + quadratic layers): OOF/valid/test predictions",
            distributed=True,
        ),
        "ensemble": Stage(
            "ensemble", ensemble.run_mmctr, ("prepare",), (*_SHARED, "ensemble"),
            "blend model predictions; write the validated submission (prediction.csv / .zip)",
        ),
    },
    "tencentgr": {
        "build": Stage(
            "build", build.run_tencentgr, (), (*_SHARED, "data"),
            "build the raw TencentGR platform layout for data.source=movielens|synthetic",
        ),
        "prepare": Stage(
            "prepare", prepare.run_tencentgr, ("build",),
            (*_SHARED, "data.layout", "data.strict", "data.mm_feats", "data.emb_dims", "data.valid_users"),
            "stream the platform / parquet layout into canonical events, users, items, embeddings, candidates",
            reads_raw=True,
        ),
        "embed": Stage(
            "embed", embed.run_tencentgr, ("prepare",),
            (*_SHARED, "device", "embed", "data.mm_feats", "data.emb_dims"),
            "item texts (where present) + provided emb_<id> (masked coverage) -> fused, behaviour-aligned vectors",
        ),
        "seqrec": Stage(
            "seqrec", seqrec.run, ("prepare",), (*_SHARED, "device", "data.valid_users", "data.stack_users",
            "data.mm_feats", "data.emb_dims", "seqrec"),
            "causal transformer over event sequences, InfoNCE + logQ: top-k of the pool per query, FAISS search",
        ),
        "baseline": Stage(
            "baseline", baseline.run_tencentgr, ("prepare",), (*_SHARED, "baseline"),
            "recent click popularity over the candidate pool, seen items left out: top-k per user",
        ),
        "ensemble": Stage(
            "ensemble", ensemble.run_tencentgr, ("prepare",), (*_SHARED, "ensemble"),
            "fuse the sources' rankings; write the validated top-10 submission (submission.json / .csv)",
        ),
    },
}  # fmt: skip


def stages_for(cfg: DictConfig) -> dict[str, Stage]:
    if cfg.track not in PIPELINES:
        raise DataError(f"track {cfg.track!r} has no pipeline yet; available: {', '.join(PIPELINES)}")
    return PIPELINES[cfg.track]


def _needs(cfg: DictConfig, stage: Stage) -> tuple[str, ...]:
    needs = stage.needs
    if stage.name == "ensemble":
        needs = (*needs, *cfg.ensemble.sources)
    uses_embed = cfg.rank.multimodal in ("auto", "embed") and "embed" in stages_for(cfg)
    if stage.name.startswith("rank_") and uses_embed:
        needs = (*needs, "embed")  # the item encoder projects the embed stage's matrix
    if stage.name == "seqrec" and cfg.seqrec.multimodal in ("auto", "embed"):
        needs = (*needs, "embed")  # the item tower projects the embed stage's matrix
    if cfg.data.source == "raw":
        needs = tuple(n for n in needs if n != "build")
    return needs


def _code_fingerprint(stage: Stage) -> str:
    src = inspect.getsourcefile(stage.run)
    return hashlib.sha256(Path(src).read_bytes()).hexdigest()[:16] if src else __version__


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def run_stage(cfg: DictConfig, name: str, force: bool = False) -> dict[str, Any]:
    """Run one stage (its upstream stages must be done). Returns its manifest."""
    stages = stages_for(cfg)
    if name not in stages:
        raise DataError(f"unknown stage {name!r} for track {cfg.track}; stages: {', '.join(stages)}")
    stage, paths = stages[name], Paths(cfg)
    if name == "build" and cfg.data.source == "raw":
        log.info("[build] data.source=raw: using the files under %s as they are", paths.raw_dir)
        return {}
    inputs: dict[str, str] = {}
    for up in _needs(cfg, stage):
        if up not in stages:
            raise DataError(f"stage {name} needs {up!r}, which is not a stage of track {cfg.track}")
        manifest = read_manifest(paths.stage_dir(up))
        if manifest is None:
            raise DataError(f"stage {name} needs stage {up}, which has not finished: run `./run.sh {up}`")
        inputs[up] = manifest["key"]
    if stage.reads_raw:
        inputs["raw"] = file_fingerprint(paths.raw_dir)
    conf = subset(cfg, stage.config_keys)
    key = stable_hash({"stage": name, "config": conf, "inputs": inputs, "code": _code_fingerprint(stage)})
    out_dir = paths.stage_dir(name)
    old = read_manifest(out_dir)
    if not force and old is not None and old.get("key") == key:
        log.info("[%s] skipped: inputs and config unchanged (%s; --force redoes it)", name, out_dir)
        return old
    if dist.rank() > 0:  # torchrun worker: trains alongside rank 0 in a scratch folder; rank 0 writes
        if stage.distributed:
            with tempfile.TemporaryDirectory() as tmp:
                stage.run(StageContext(cfg, paths, Path(tmp)))
        return {}
    log.info("[%s] running -> %s", name, out_dir)
    t0 = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        figures = stage.run(StageContext(cfg, paths, tmp)) or {}
        manifest = {
            "stage": name,
            "key": key,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - t0, 3),
            "inputs": {**inputs, **({"raw_dir": str(paths.raw_dir)} if stage.reads_raw else {})},
            "config": conf,
            "figures": figures,
            "files": {p.name: p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()},
            "recstack": __version__,
        }
        write_json(tmp / MANIFEST, manifest)  # last: its presence means the stage finished
    log.info("[%s] done in %.1fs: %s", name, manifest["duration_s"], _short(figures))
    return manifest


def upstream_closure(cfg: DictConfig, name: str) -> list[str]:
    """`name` and every stage it depends on, in run order."""
    stages = stages_for(cfg)
    seen: list[str] = []

    def visit(n: str) -> None:
        if n not in stages:
            raise DataError(f"unknown stage {n!r} for track {cfg.track}; stages: {', '.join(stages)}")
        for up in _needs(cfg, stages[n]):
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
        out[n] = run_stage(cfg, n, force=force and (name is None or n == name))
        dist.barrier()  # under torchrun the next stage starts once rank 0 has written this one
    return out


def _short(figures: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()]
    return ", ".join(parts[:8]) or "-"
