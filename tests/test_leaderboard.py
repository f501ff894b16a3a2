"""The leaderboard: a row per model stage that really ran (none for a cache skip), config differences from
the schema defaults, test metrics from the local labels, and `./run.sh leaderboard` sorted by valid metric."""

import pandas as pd
import pytest

from recstack import cli, leaderboard
from recstack.errors import DataError
from recstack.paths import Paths
from recstack.pipeline import run_stage, run_until

from conftest import ROOT, SMALL_SYNTH

OVERRIDES = (*SMALL_SYNTH, "stack.sources=[baseline]", "stack.folds=3", "ensemble.sources=[baseline,stack]")


def test_rows_for_model_stages_that_ran_none_for_skips(tmp_cfg):
    cfg = tmp_cfg("mmctr_synthetic.yaml", *OVERRIDES)
    run_until(cfg, "ensemble")
    board = pd.read_csv(Paths(cfg).leaderboard)
    assert board["stage"].tolist() == ["baseline", "stack", "ensemble"]  # build / prepare are no models
    assert (
        board["metric"].eq("valid_auc").all() and board["test"].between(0, 1).all()
    )  # synthetic keeps labels
    assert set(board.columns) == set(leaderboard.COLUMNS)
    assert (board["duration_s"] >= 0).all() and board["samples_per_s"].notna().all()
    run_until(cfg, "ensemble")  # every stage skipped by the cache: no new row
    assert len(pd.read_csv(Paths(cfg).leaderboard)) == 3
    run_stage(cfg, "stack", force=True)
    assert pd.read_csv(Paths(cfg).leaderboard)["stage"].tolist()[-1] == "stack"
    diff = board.set_index("stage").loc["baseline", "config_diff"]
    assert '"baseline.folds": 3' in diff  # differs from the defaults
    assert '"dataset"' not in diff and '"track"' not in diff  # the row's own columns, not differences
    assert '"baseline.prior_strength"' not in diff  # the default value is not listed


def test_config_diff_and_git_commit_fallback(monkeypatch):
    assert leaderboard.config_diff({"seed": 2025, "stack.lgbm": {"num_leaves": 7, "max_depth": 5}}) == {
        "stack.lgbm.max_depth": 5
    }
    # a ranker's block against its own defaults (rank.<name> is added to the schema at load)
    assert leaderboard.config_diff({"track": "tencentgr", "rank.din": {"lr": 1e-3, "head": "dcn"}}) == {
        "rank.din.head": "dcn"
    }

    def no_git(*args, **kwargs):
        raise OSError("git not installed")

    monkeypatch.setattr(leaderboard.subprocess, "run", no_git)
    assert leaderboard.git_commit() == ""


def test_cli_prints_the_table_sorted_by_valid_metric(tmp_cfg, tmp_path, capsys, caplog):
    cfg = tmp_cfg("mmctr_synthetic.yaml", *OVERRIDES)
    args = ["--config", str(ROOT / "configs" / "mmctr_synthetic.yaml"), f"input_root={tmp_path / 'input'}",
            f"output_root={tmp_path / 'outputs'}"]  # fmt: skip
    assert cli.main(["leaderboard", *args]) == 2  # nothing ran yet: a clear error
    assert "no leaderboard yet" in capsys.readouterr().err + caplog.text
    run_until(cfg, "ensemble")
    assert cli.main(["leaderboard", *args]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    values = [float(line.split()[0]) for line in lines[2:]]
    assert len(values) == 3 and values == sorted(values, reverse=True)
    assert "leaderboard.csv" in lines[0]
    assert max(len(line) for line in lines[1:]) <= 100 and "fingerprint" not in lines[1]  # 100 columns
    assert cli.main(["leaderboard", "--wide", *args]) == 0
    assert "fingerprint" in capsys.readouterr().out.splitlines()[1]  # --wide: every column


def test_read_rejects_a_foreign_file(tmp_cfg):
    cfg = tmp_cfg("mmctr_synthetic.yaml")
    path = Paths(cfg).leaderboard
    path.parent.mkdir(parents=True)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        leaderboard.read(cfg)
