"""`./run.sh sweep`: Optuna trials on the stage cache, resumable SQLite studies, pruning without half-written
stage folders, the best trial as a config file, every trial a leaderboard row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from recstack import cli
from recstack import sweep as sweep_module
from recstack.config import ConfigError, load_config
from recstack.errors import DataError
from recstack.paths import MANIFEST, Paths
from recstack.report import analysis
from recstack.sweep import read_space, run_sweep
from recstack.train import hooks

from conftest import ROOT, SMALL_SYNTH

CONFIG = str(ROOT / "configs" / "mmctr_synthetic.yaml")
SPACE = """stage: rank_din
params:
  rank.din.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  rank.din.emb_dim: {type: int, low: 4, high: 8, step: 4}
pruner: {type: none}
"""


@pytest.fixture
def setup(tmp_path):
    space = tmp_path / "din.yaml"
    space.write_text(SPACE)
    overrides = [*SMALL_SYNTH, f"input_root={tmp_path / 'in'}", f"output_root={tmp_path / 'out'}"]
    return space, overrides, load_config(CONFIG, overrides)


def _study(base, name):
    db = Paths(base).run_dir / "sweeps" / f"{name}.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def test_trials_reuse_the_base_stages_resume_and_the_best_config_reproduces(setup, caplog):
    space, overrides, base = setup
    caplog.set_level("INFO")
    result = run_sweep(CONFIG, overrides, str(space), trials=3)
    assert result["complete"] == 3 and result["trials"] == 3
    study = _study(base, "din")
    values = [t.value for t in study.trials]
    assert result["best_value"] == max(values)
    sweeps = Paths(base).run_dir / "sweeps"  # the history and the importances as PNGs beside the study
    assert result["pictures"] == [str(sweeps / "din_history.png"), str(sweeps / "din_importance.png")]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result["pictures"])
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3  # three different proposals
    # upstream stages come from the base run (the cache skips them), the objective stage runs per trial
    assert caplog.text.count("[prepare] skipped") >= 3 and caplog.text.count("[rank_din] running") == 3
    base_prepare = json.loads((Paths(base).stage_dir("prepare") / MANIFEST).read_text())["key"]
    for t in study.trials:
        trial = load_config(
            CONFIG, [*overrides, *t.user_attrs["overrides"], f"output_root={t.user_attrs['output_root']}"]
        )
        assert json.loads((Paths(trial).stage_dir("prepare") / MANIFEST).read_text())["key"] == base_prepare
        got = json.loads((Paths(trial).stage_dir("rank_din") / MANIFEST).read_text())["figures"]["valid_auc"]
        assert got == t.value
    # every trial is a row of the base run's leaderboard, named by study and trial
    board = pd.read_csv(Paths(base).leaderboard, keep_default_na=False)
    rows = board[board["sweep"] != ""]
    assert sorted(rows["sweep"]) == ["din#0", "din#1", "din#2"]
    assert sorted(rows["valid"]) == sorted(values)
    # the same command with --trials 5 resumes: two more trials, the first three kept as they were
    again = run_sweep(CONFIG, overrides, str(space), trials=5)
    study = _study(base, "din")
    assert again["complete"] == 5 and [t.value for t in study.trials[:3]] == values
    # the best trial's config file runs the stage to the same figure
    best = load_config(result["best_yaml"] if again["best_trial"] < 3 else again["best_yaml"],
                       [f"output_root={base.output_root}/replay"])  # fmt: skip
    from recstack.pipeline import run_until

    assert run_until(best, "rank_din")["rank_din"]["figures"]["valid_auc"] == pytest.approx(
        again["best_value"]
    )


def test_a_pruned_trial_leaves_a_record_and_no_stage_folder(setup):
    space, overrides, base = setup
    space.write_text(
        SPACE.replace("pruner: {type: none}", "pruner: {type: threshold, lower: 0.999, warmup_steps: 0}")
    )
    with pytest.raises(ConfigError, match="no trial finished"):
        run_sweep(CONFIG, overrides, str(space), trials=2)
    study = _study(base, "din")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    for t in study.trials:
        run = Paths(load_config(CONFIG, [*overrides, f"output_root={t.user_attrs['output_root']}"])).run_dir
        record = json.loads((run / "pruned.json").read_text())
        assert record["step"] == 1 and record["trial"] == t.number and record["stage"] == "rank_din"
        assert not (run / "rank_din").exists() and not list(run.glob(".rank_din*"))
        assert not (run / "_resume" / "rank_din").exists()
    # the report reads a pruned trial at the step it stopped, with its last reported valid AUC
    trials = analysis.sweep_trials(Paths(base).run_dir / "sweeps" / "din.db")
    assert list(trials["state"]) == ["pruned"] * 2 and list(trials["step"]) == [1, 1]
    assert list(trials["value"]) == [t.intermediate_values[1] for t in study.trials]
    assert (
        trials["best_so_far"].isna().all()
        and analysis.sweep_importances(Paths(base).run_dir / "sweeps" / "din.db") is None
    )


def test_hooks_report_nothing_without_a_listener_and_pass_pruned_through():
    hooks.report(1, 0.5)  # no listener: a no-op
    seen = []
    with hooks.listening(lambda s, v: seen.append((s, v))):
        hooks.report(2, 0.7)
    hooks.report(3, 0.9)
    assert seen == [(2, 0.7)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("stage: rank_din\nparams: {rank.din.lrr: {type: float, low: 0.1, high: 0.2}}\n", "unknown config key 'rank.din.lrr'"),
        ("stage: rank_din\nparams: {rank.din.lr: {type: float, low: 0.2, high: 0.1}}\n", "needs low < high"),
        ("stage: rank_din\nparams: {rank.din.batch_size: {type: int, low: 0, high: 8}}\n", "'rank.din.batch_size' is 0; expected >= 1"),
        ("stage: rank_din\nparams: {rank.din.lr: {type: uniform, low: 0.1, high: 0.2}}\n", "type is 'uniform'"),
        ("stage: rank_nope\nparams: {rank.din.lr: {type: float, low: 0.1, high: 0.2}}\n", "unknown stage 'rank_nope'"),
        ("stage: rank_din\nparams: {rank.din.lr: {type: float, low: 0.1, high: 0.2}}\nsampler: grid\n", "expected keys stage, params"),
    ],
)  # fmt: skip
def test_a_bad_space_is_refused_before_any_trial(setup, text, message):
    space, overrides, base = setup
    space.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_space(space, base)
    assert not (Paths(base).run_dir / "sweeps").exists()


def test_the_cli_runs_a_sweep_and_names_a_missing_space(setup, capsys):
    space, overrides, base = setup
    assert cli.main(["sweep", "--config", CONFIG, *overrides]) == 2
    assert (
        cli.main(
            ["sweep", "--config", CONFIG, "--space", str(space), "--trials", "2", "--study", "s1", *overrides]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "complete: 2" in out and (Paths(base).run_dir / "sweeps" / "s1_best.yaml").is_file()


def test_two_workers_share_one_study(setup):
    """--jobs 2: two processes on one SQLite study; trial numbers are never handed out twice and each
    worker proposes its own points (a shared seed would repeat the other's)."""
    space, overrides, base = setup
    result = run_sweep(CONFIG, overrides, str(space), trials=3, jobs=2)
    study = _study(base, "din")
    numbers = [t.number for t in study.trials]
    assert (
        len(numbers) == len(set(numbers)) == result["trials"] >= 3
    )  # up to jobs - 1 over: both were running
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(numbers)
    assert result["failed"] == 0


def test_a_trial_the_config_refuses_fails_with_its_message_and_the_study_goes_on(setup):
    """Each bound is a valid value alone, but seqrec.epochs=0 with the base run's seqrec.min_steps=0 is no
    schedule: those trials fail with the config's message, the others complete."""
    space, overrides, base = setup
    space.write_text(
        SPACE.replace("pruner:", "  seqrec.epochs: {type: categorical, choices: [0, 1]}\npruner:")
    )
    result = run_sweep(CONFIG, [*overrides, "seqrec.min_steps=0"], str(space), trials=2)
    study = _study(base, "din")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert result["complete"] == len(complete) == 2 and all(t.params["seqrec.epochs"] == 1 for t in complete)
    assert all(t.params["seqrec.epochs"] == 0 for t in failed)
    assert all("seqrec.epochs and seqrec.min_steps are both 0" in t.user_attrs["error"] for t in failed)
    summary = analysis.sweep_summary(Paths(base).run_dir / "sweeps" / "din.db")
    assert (
        summary["complete"] == 2
        and summary["fail"] == len(failed)
        and summary["best valid"] == result["best_value"]
    )


def test_the_report_names_a_missing_or_foreign_study(tmp_path):
    with pytest.raises(DataError, match="no such sweep study"):
        analysis.sweep_trials(tmp_path / "nope.db")
    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path / 'mine.db'}")
    with pytest.raises(DataError, match="holds no study named 'mine'"):
        analysis.sweep_trials(tmp_path / "mine.db")


def test_a_killed_sweep_resumes_without_repeating_finished_trials(setup, monkeypatch):
    """SIGKILL mid-trial, then the same command: the finished trials are kept as they were, the trial cut
    off is marked failed (its heartbeat stopped) and never rerun under its number, and the study reaches
    --trials; the killed trial left no finished stage folder."""
    space, overrides, base = setup
    run_sweep(CONFIG, overrides, str(space), trials=1)  # the base run and a first trial, in this process
    args = [sys.executable, "-m", "recstack", "sweep", "--config", CONFIG, "--space", str(space),
            "--trials", "4", *overrides]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    complete, running = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, "the sweep finished before it could be killed"
            trials = _study(base, "din").get_trials(deepcopy=False)
            states = [t.state for t in trials]
            # a trial inside its objective (its folders linked): its heartbeat has been recorded, so the
            # resumption can tell it was cut off (a trial killed before its first beat stays "running")
            inside = any(t.state == running and "output_root" in t.user_attrs for t in trials)
            if states.count(complete) >= 2 and inside:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    trials = _study(base, "din").get_trials()
    before = {t.number: t.value for t in trials if t.state == complete}
    (killed,) = [t for t in trials if t.state == running]
    monkeypatch.setattr(sweep_module, "GRACE_S", 1)  # the schema's 3 minutes, shortened for the test
    time.sleep(2)
    result = run_sweep(CONFIG, overrides, str(space), trials=4)
    after = {t.number: t for t in _study(base, "din").trials}
    assert {n: after[n].value for n in before} == before
    assert after[killed.number].state == optuna.trial.TrialState.FAIL
    assert result["complete"] == 4 and sorted(after) == list(range(len(after)))
    # the killer waited for the trial to be inside its objective: its folder is named, its stage unfinished
    run = Paths(load_config(CONFIG, [*overrides, f"output_root={killed.user_attrs['output_root']}"])).run_dir
    assert not (run / "rank_din" / MANIFEST).exists()
