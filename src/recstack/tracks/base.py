"""What a track is: its stages in run order, the optional inputs of its stages, and how a submission of
its task is scored against the local answers (`evaluate`) and a stage's test predictions are scored for the
leaderboard (`test_metric`).

Layering: tracks sit between the pipeline and the stages (`cli > pipeline > tracks > leaderboard > stages`,
checked by .importlinter). A track module imports the stage modules and wires each stage to a body: a
shared body with the track's adapter (embed: `embed.stage_body(<its ItemSide>)`; ensemble:
`ensemble.stage_body(<its Blending>)`, which reads, scores, blends and writes its validated submission), or
the track's own body where the work itself differs (build / prepare: its raw layout; baseline, retrieve,
stack: its models). The stages never ask which track they run in, and the pipeline and CLI only dispatch
through `TRACKS`. Data flows one way: stage bodies take what differs as arguments, tracks choose them.

A stage body's code lives in its stage module, not here: the stage cache keys on the source of
`stage.run.__module__` and what it imports, so a track module that imports every stage must not be that
module (editing models/din.py would then rerun every stage of the track).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
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


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], dict[str, Any]]
    needs: tuple[str, ...]
    config_keys: tuple[str, ...]
    help: str
    reads_raw: bool = False  # fingerprint the raw input folder
    distributed: bool = False  # under torchrun every rank runs it (DDP training); rank 0 alone writes


class Track(ABC):
    """One competition track. `stages` is a plain dict (tests swap a stage in it); `pipeline()` is what runs."""

    name: str
    stages: dict[str, Stage]

    def pipeline(self) -> dict[str, Stage]:
        """The stages `all` runs, in order (a track may generate some, e.g. one per registered ranker)."""
        return dict(self.stages)

    def optional_needs(self, cfg: DictConfig, stage: str) -> tuple[str, ...]:
        """Upstream stages `stage` reads when they are stages of this track (beyond `Stage.needs` and the
        track-independent rules of the pipeline): their manifests enter its cache key."""
        return ()

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
