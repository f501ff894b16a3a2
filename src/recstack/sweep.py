"""`./run.sh sweep`: a hyperparameter search over config keys with Optuna, resumable, on the stage cache.

    ./run.sh sweep --config configs/mmctr_movielens.yaml --space configs/sweeps/mmctr_din.yaml --trials 20

The space file (a typed schema: unknown fields are errors) names the stage whose validated figure is the
objective (`valid_auc` / `valid_score`, never a local test figure) and the config keys to search:

    stage: rank_din
    params:
      rank.din.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      rank.din.emb_dim: {type: int, low: 8, high: 32, step: 8}
      rank.din.dropout: {type: categorical, choices: [0.0, 0.1, 0.2]}
    pruner: {type: median}            # median | hyperband | threshold | none

Each trial is an ordinary run into its own output folder, `<run>/sweeps/<study>/trial_<n>/`, seeded with
hard links to the base run's stage folders: the stage cache then skips every upstream stage whose keys the
trial does not change (their inputs, config and code are the base run's), and reruns the rest. Pruning reads
the learning curve the rank and seqrec stages already compute (train/hooks.py: each epoch's valid AUC, each
evaluation's valid score); a pruned stage leaves no folder (the artifact layer removes it) and the trial a
`pruned.json` beside its run. The study lives in SQLite, `<run>/sweeps/<study>.db` (Optuna's RDB storage),
so a killed sweep resumes with the same command (finished trials are kept, `--trials` is the total) and
`--jobs` worker processes share one study without running a trial twice. The best trial's whole config is
written as `<run>/sweeps/<study>_best.yaml`, a file for `--config`; every finished trial is a row of the
run's leaderboard (`sweep` = study#trial).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from recstack import leaderboard
from recstack.artifacts import write_json, write_text
from recstack.config import ConfigError, load_config, to_yaml
from recstack.errors import DataError
from recstack.metrics import VALID_METRICS
from recstack.paths import MANIFEST, Paths
from recstack.pipeline import run_stage, run_until, upstream_closure
from recstack.report import analysis, plots
from recstack.tracks import track_of
from recstack.train import hooks

log = logging.getLogger(__name__)
PARAM_TYPES = ("float", "int", "categorical")
PRUNERS = ("median", "hyperband", "threshold", "none")
# a running trial beats every HEARTBEAT_S; one silent for GRACE_S (its worker was killed) is marked failed
HEARTBEAT_S, GRACE_S = 60, 180


@dataclass
class Param:
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)


@dataclass
class PrunerSpec:
    type: str = "median"
    # median: trials before any is pruned, reports before a trial may be; threshold: prune below `lower`
    startup_trials: int = 5
    warmup_steps: int = 1
    lower: float = 0.0


@dataclass
class Space:
    stage: str
    params: dict[str, Param]
    metric: str = ""  # default: the stage's valid_auc (mmctr) or valid_score (tencentgr)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    seed: int = 2025  # the TPE sampler's


def read_space(path: str | Path, cfg: DictConfig) -> Space:
    """The search space, checked against the config schema and the track's stages before any trial runs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep space file not found: {path}")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'stage' and 'params'")
    unknown = set(raw) - {"stage", "params", "metric", "pruner", "seed"}
    if unknown or "stage" not in raw or not raw.get("params"):
        raise ConfigError(
            f"{path}: expected keys stage, params (and optionally metric, pruner, seed); "
            f"got {', '.join(sorted(raw))}"
        )
    params = {}
    for key, spec in raw["params"].items():
        where = f"{path}: params.{key}"
        if not isinstance(spec, dict) or set(spec) - {"type", "low", "high", "log", "step", "choices"}:
            raise ConfigError(
                f"{where}: expected {{type, low, high, log, step}} or {{type, choices}}, got {spec}"
            )
        p = Param(**spec)
        if p.type not in PARAM_TYPES:
            raise ConfigError(f"{where}: type is {p.type!r}; expected one of {', '.join(PARAM_TYPES)}")
        if p.type == "categorical" and not p.choices:
            raise ConfigError(f"{where}: a categorical parameter needs choices")
        if p.type != "categorical" and (p.low is None or p.high is None or not p.low < p.high):
            raise ConfigError(f"{where}: needs low < high, got low={p.low}, high={p.high}")
        values = p.choices if p.type == "categorical" else [p.low, p.high]
        for v in values:  # each bound / choice must be a value the schema takes (ranges included)
            load_config(None, [f"track={cfg.track}", _override(key, v)])
        params[key] = p
    pr = raw.get("pruner") or {}
    pruner = PrunerSpec(**pr) if isinstance(pr, dict) else None
    if pruner is None or pruner.type not in PRUNERS:
        raise ConfigError(f"{path}: pruner is {pr!r}; expected {{type: {' | '.join(PRUNERS)}, ...}}")
    space = Space(
        stage=str(raw["stage"]),
        params=params,
        metric=str(raw.get("metric", "")),
        pruner=pruner,
        seed=int(raw.get("seed", 2025)),
    )
    try:
        upstream_closure(cfg, space.stage)
    except DataError as e:  # an unknown stage: the message names the track's stages
        raise ConfigError(f"{path}: {e}") from None
    return space


def _override(key: str, value: Any) -> str:
    if isinstance(value, list):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    return f"{key}={value}"


def _pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    if spec.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps
        )
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if spec.type == "threshold":
        return optuna.pruners.ThresholdPruner(lower=spec.lower, n_warmup_steps=spec.warmup_steps)
    return optuna.pruners.NopPruner()


def _link_tree(src: Path, dst: Path) -> None:
    """A copy of `src` made of hard links (no bytes copied; a stage rewrites its folder atomically, so the
    base run's files are never written through a link)."""
    shutil.copytree(src, dst, copy_function=os.link, dirs_exist_ok=False)


@dataclass
class Sweep:
    config: str
    overrides: list[str]
    space_path: str
    study: str
    trials: int

    @property
    def base(self) -> DictConfig:
        return load_config(self.config, self.overrides)

    def folder(self) -> Path:
        return Paths(self.base).run_dir / "sweeps"

    def storage(self) -> optuna.storages.RDBStorage:
        self.folder().mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(self.folder() / f'{self.study}.db').resolve()}"
        # heartbeats: a trial of a killed worker is marked failed when the next trial starts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)

    def open_study(self, space: Space, worker: int = 0) -> optuna.Study:
        study = optuna.create_study(
            study_name=self.study,
            storage=self.storage(),
            pruner=_pruner(space.pruner),
            direction="maximize",
            load_if_exists=True,
        )
        # each worker and each resumption draws its own random start-up points: the same seed in two
        # processes (or after a restart) would propose the trials already run
        seed = space.seed + 7919 * worker + len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=seed)
        return study

    def objective(self, space: Space, trial: optuna.Trial) -> float:
        base = self.base
        values = {}
        for key, p in space.params.items():
            if p.type == "categorical":
                values[key] = trial.suggest_categorical(key, p.choices)
            elif p.type == "int":
                values[key] = trial.suggest_int(
                    key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
                )
            else:
                values[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        root = self.folder() / self.study / f"trial_{trial.number:04d}"
        overrides = [*self.overrides, *(_override(k, v) for k, v in values.items()), f"output_root={root}"]
        trial.set_user_attr("overrides", [_override(k, v) for k, v in values.items()])
        try:
            cfg = load_config(self.config, overrides)
        except ConfigError as e:
            log.error("sweep %s trial %d: %s", self.study, trial.number, e)
            trial.set_user_attr("error", str(e))
            raise
        run = Paths(cfg).run_dir
        for stage in upstream_closure(cfg, space.stage)[:-1]:  # the base run's folders, by hard link
            src, dst = Paths(base).stage_dir(stage), Paths(cfg).stage_dir(stage)
            if (src / MANIFEST).is_file() and not dst.exists():
                _link_tree(src, dst)
        trial.set_user_attr("output_root", str(root))

        def listen(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise hooks.Pruned(step, value)

        try:
            with hooks.listening(listen):
                manifest = run_until(cfg, space.stage)[space.stage]
        except hooks.Pruned as e:
            shutil.rmtree(Paths(cfg).resume_dir(space.stage), ignore_errors=True)  # nothing to resume
            write_json(
                run / "pruned.json",
                {
                    "stage": space.stage,
                    "step": e.step,
                    "value": e.value,
                    "trial": trial.number,
                    "params": values,
                },
            )
            log.info(
                "sweep %s trial %d pruned at step %d (valid %.5f)", self.study, trial.number, e.step, e.value
            )
            raise optuna.TrialPruned(str(e)) from None
        figures = manifest.get("figures", {})
        metric = space.metric or next(m for m in VALID_METRICS if m in figures)
        if metric not in figures:
            raise ConfigError(
                f"sweep: stage {space.stage} reports no {metric!r}; it has {', '.join(figures)}"
            )
        value = float(figures[metric])
        # the trial as a row of the base run's leaderboard (the stage row in the trial's own folder too)
        leaderboard.append(base, manifest, track_of(base).test_metric, sweep=f"{self.study}#{trial.number}")
        return value


def _work(sweep: Sweep, worker: int, threads: int = 0) -> None:
    """One worker process: trials until the study holds `trials` finished (complete or pruned) ones.
    `threads` > 0: torch's CPU threads (J workers share the cores: J x all-cores threads thrash)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    space = read_space(sweep.space_path, sweep.base)
    study = sweep.open_study(space, worker)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=states))
    if done >= sweep.trials:
        return
    failed = optuna.trial.TrialState.FAIL

    def too_many_failures(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        cap = max(10, 2 * sweep.trials)  # a space that mostly fails is a wrong space: stop, do not loop
        if len(study.get_trials(deepcopy=False, states=(failed,))) >= cap:
            log.error("sweep %s: %d trials failed; stopping (see the log for their errors)", sweep.study, cap)
            study.stop()

    # a trial whose values the config or the data refuse (ConfigError / DataError: a combination of bounds
    # no single bound shows) is recorded as failed, with its message, and the study goes on
    study.optimize(
        lambda t: sweep.objective(space, t),
        n_trials=None,
        callbacks=[optuna.study.MaxTrialsCallback(sweep.trials, states=states), too_many_failures],
        catch=(ConfigError, DataError),
        gc_after_trial=True,
    )


def run_sweep(
    config: str,
    overrides: list[str],
    space_path: str,
    trials: int = 20,
    jobs: int = 1,
    study: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study; returns the best trial's figures and writes its config YAML."""
    if trials < 1 or jobs < 1:
        raise ConfigError(f"sweep: --trials ({trials}) and --jobs ({jobs}) must be >= 1")
    base = load_config(config, overrides)
    space = read_space(space_path, base)
    name = study or Path(space_path).stem
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"sweep: study name {name!r} must be letters, digits, '-' or '_'")
    sweep = Sweep(config, list(overrides), str(space_path), name, trials)
    # the base run up to the stage's inputs, once, so that every trial finds them (and links them)
    for stage in upstream_closure(base, space.stage)[:-1]:
        run_stage(base, stage)
    sweep.open_study(space)  # created before the workers race to create it
    if jobs == 1:
        _work(sweep, 0)
    else:
        ctx = mp.get_context("spawn")  # fresh interpreters: no torch / OpenMP state shared across a fork
        threads = max(1, (os.cpu_count() or 1) // jobs)
        procs = [ctx.Process(target=_work, args=(sweep, k, threads)) for k in range(jobs)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise RuntimeError(f"sweep: {len(failed)} worker(s) failed (exit codes {failed}); see the log")
    return summarise(sweep, space)


def summarise(sweep: Sweep, space: Space) -> dict[str, Any]:
    study = sweep.open_study(space)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"sweep {sweep.study}: no trial finished (all pruned or failed)")
    best = study.best_trial
    cfg = load_config(sweep.config, [*sweep.overrides, *best.user_attrs["overrides"]])
    path = sweep.folder() / f"{sweep.study}_best.yaml"
    header = (
        f"# best trial {best.number} of sweep {sweep.study} ({space.stage} valid {best.value:.5f}); "
        f"overrides: {' '.join(best.user_attrs['overrides'])}\n"
    )
    write_text(path, header + to_yaml(cfg))
    pictures = draw(sweep.folder() / f"{sweep.study}.db")
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    return {
        "study": sweep.study,
        "storage": str(sweep.folder() / f"{sweep.study}.db"),
        "best_trial": best.number,
        "best_value": best.value,
        "best_overrides": best.user_attrs["overrides"],
        "best_yaml": str(path),
        "trials": len(states),
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "failed": states.count("fail"),
        "pictures": [str(p) for p in pictures],
    }


def draw(db: Path) -> list[Path]:
    """The study's history and parameter importances as PNGs beside its database (`<study>_history.png`,
    `<study>_importance.png`); the run report and notebook 06 draw the same from the database."""
    trials = analysis.sweep_trials(db)
    out = [
        plots.save_png(
            plots.sweep_history(trials, f"sweep {db.stem}"), db.with_name(f"{db.stem}_history.png")
        )
    ]
    importances = analysis.sweep_importances(db)
    if importances is not None:
        fig = plots.bars(importances, f"sweep {db.stem}: parameter importance (fANOVA)", "share of variance")
        out.append(plots.save_png(fig, db.with_name(f"{db.stem}_importance.png")))
    return out
