"""What a track is: its stages in run order, what each stage reads, and how a submission of its task is
scored against the local answers (`evaluate`) and a stage's test predictions for the leaderboard
(`test_metric`).

Layout: one package per track, `tracks/<track>/`: its `Track` subclass in `__init__.py` (the stage list), and
one module per stage holding that stage's body, `run(ctx)`: the track's own work (build / prepare: its raw
layout; baseline, retrieve, stack: its models) or a shared body with the track's adapter (embed:
`stages/embed.embed_items` over its `ItemSide`; ensemble: `stages/ensemble.blend_and_submit` with its
`Blending`). Shared stages live in `stages/` (rank: one `rank_<name>` per registered ranker). The stages never
ask which track they run in; the pipeline and the CLI dispatch through `TRACKS` and know no stage by name.
Layering: `cli > pipeline > tracks > leaderboard > stages`, and no track imports another (.importlinter).

A stage body lives in its own module, not in the track's `__init__.py`: the stage cache keys on the source of
`stage.run.__module__` and what it imports, so the module that imports every stage must not be that module
(editing models/din.py would then rerun every stage of the track).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recstack.errors import DataError
from recstack.metrics import VALID_METRICS
from recstack.stages.context import StageContext

DATA_KEYS = ("track", "dataset", "seed")  # the config keys every stage's cache key holds
# ... and every stage that can run torch: `deterministic` changes its bytes. build and prepare import no torch
# (tests/test_deterministic.py checks), so flipping the switch leaves the data and its (at TencentGR-1M size,
# 5-minute) prepare alone instead of rebuilding them
SHARED_KEYS = (*DATA_KEYS, "deterministic")


# The stages a stage reads beyond `Stage.needs`, from the config and the names of its track's stages (which
# this track has): e.g. the ensemble its `ensemble.sources`, retrieve the embed stage where the track has one
Reads = Callable[[DictConfig, Collection[str]], Iterable[str]]


def present(*names: str) -> Reads:
    """Reads these stages where the track has them."""
    return lambda cfg, stages: tuple(n for n in names if n in stages)


def ensemble_sources(cfg: DictConfig, stages: Collection[str]) -> tuple[str, ...]:
    return tuple(cfg.ensemble.sources)


def _nothing(cfg: DictConfig, stages: Collection[str]) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Stage:
    """One stage: its body, the stages it always reads (`needs`) and those it reads by config (`reads`),
    the config keys in its cache key, its help line. The pipeline asks a stage what it reads (`upstream`);
    it knows no stage by name."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    needs: tuple[str, ...]
    config_keys: tuple[str, ...]
    help: str
    reads_raw: bool = False  # fingerprint the raw input folder
    distributed: bool = False  # under torchrun every rank runs it (DDP training); rank 0 alone writes
    reads: Reads = _nothing

    def upstream(self, cfg: DictConfig, stages: Collection[str]) -> tuple[str, ...]:
        """Every stage this one reads under `cfg` in a track of `stages` (their manifests enter its cache
        key); `build` only where the config builds the data (data.source is not raw)."""
        out = (*self.needs, *self.reads(cfg, stages))
        return tuple(n for n in out if n != "build") if cfg.data.source == "raw" else out


def build_stage(run: Callable[[StageContext], dict[str, Any]], help: str) -> Stage:
    """A track's `build`: it reads no stage and is keyed on the data block only (not run for raw data)."""
    return Stage("build", run, (), (*DATA_KEYS, "data"), help)


class Track(ABC):
    """One competition track. `stages` is a plain dict (tests swap a stage in it); `pipeline()` is what runs."""

    name: str
    stages: dict[str, Stage]

    def pipeline(self) -> dict[str, Stage]:
        """The stages `all` runs, in order (a track may generate some, e.g. one per registered ranker)."""
        return dict(self.stages)

    @abstractmethod
    def evaluate(self, cfg: DictConfig, submission: str) -> dict[str, float]:
        """Score a submission file against the answers our dataset builders kept aside (local_truth/)."""

    @abstractmethod
    def test_metric(self, cfg: DictConfig, folder: Path) -> float | None:
        """The test figure of a stage folder's predictions from the local answers; None without them."""

    def test_figures(self, cfg: DictConfig, folder: Path, figures: dict[str, Any]) -> dict[str, float]:
        """Local test figures beside a finished stage's valid ones (`test_<name>` for `valid_<name>` in
        `figures`), from the answers a dataset builder kept; {} without them or where the track has none.
        Computed after the stage, outside it: no stage reads the answers, so none can make a choice on them.
        Here: the test figure of a model stage's predictions (test_metric) beside its valid_auc / valid_score."""
        metric = next((m for m in VALID_METRICS if isinstance(figures.get(m), (int, float))), None)
        t = self.test_metric(cfg, folder) if metric is not None else None
        return {} if t is None else {f"test{metric[5:]}": t}


def no_truth(path: Path) -> DataError:
    return DataError(
        f"{path}: no local ground truth. Only datasets built by recstack (movielens, synthetic) keep the "
        "hidden answers; a real challenge test set is scored by the leaderboard."
    )
