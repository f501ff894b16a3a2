"""The stage runner and CLI end to end on a tiny synthetic mmctr set: skip, force, atomicity, errors."""

import json

import numpy as np
import pandas as pd
import pytest

from recstack import cli
from recstack.paths import MANIFEST, Paths
from recstack.pipeline import pipeline_of, run_stage, run_until
from recstack.tracks import TRACKS

from conftest import ROOT, SMALL_SYNTH


@pytest.fixture
def synth(tmp_cfg):
    return tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH)


def test_whole_pipeline_writes_validated_submission(synth):
    manifests = run_until(synth)
    assert list(manifests) == list(pipeline_of("mmctr"))  # every stage, in registry order
    paths = Paths(synth)
    sub = paths.stage_dir("ensemble") / "prediction.zip"
    assert sub.is_file()
    figs = manifests["baseline"]["figures"]
    assert 0.55 < figs["valid_auc"] <= 1.0  # above chance: item and level priors carry signal
    prep = manifests["prepare"]
    assert prep["figures"]["rows_test"] == 150 and prep["inputs"]["build"] == manifests["build"]["content"]
    # raw layout + hidden labels were built under input/<dataset>
    assert (paths.raw_dir / "MicroLens_1M_x1" / "train.parquet").is_file()
    assert paths.raw_mmctr.test_truth.is_file()
    items = pd.read_parquet(paths.stage_dir("prepare") / "items.parquet")
    assert items["has_image"].iloc[1:].all() and items["id_index"].iloc[0] == 0


def test_unchanged_stage_is_skipped_and_force_redoes(synth, caplog):
    run_until(synth)
    caplog.set_level("INFO")
    again = run_until(synth, "baseline")
    assert "[baseline] skipped: inputs and config unchanged" in caplog.text
    first_key = again["baseline"]["key"]
    t = again["baseline"]["finished_at"]
    forced = run_stage(synth, "baseline", force=True)
    assert forced["key"] == first_key and forced["finished_at"] >= t
    assert "[baseline] running" in caplog.text


def test_config_change_reruns_only_downstream(synth, tmp_cfg):
    first = run_until(synth)
    changed = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "baseline.prior_strength=5")
    second = run_until(changed)
    assert second["prepare"]["key"] == first["prepare"]["key"]
    assert second["baseline"]["key"] != first["baseline"]["key"]
    assert second["ensemble"]["key"] != first["ensemble"]["key"]  # its input changed


def test_interrupted_stage_never_looks_finished(synth, monkeypatch):
    run_until(synth, "prepare")
    out = Paths(synth).stage_dir("baseline")

    def boom(ctx):
        (ctx.out / "predictions.parquet").write_text("half")
        raise KeyboardInterrupt

    stage = TRACKS["mmctr"].stages["baseline"]
    monkeypatch.setitem(
        TRACKS["mmctr"].stages, "baseline", stage.__class__(**{**stage.__dict__, "run": boom})
    )
    with pytest.raises(KeyboardInterrupt):
        run_stage(synth, "baseline")
    assert not out.exists()
    assert not list(out.parent.glob(".baseline.tmp-*"))
    # a previous finished result stays intact when a rerun is interrupted
    monkeypatch.setitem(TRACKS["mmctr"].stages, "baseline", stage)
    run_stage(synth, "baseline")
    before = (out / MANIFEST).read_text()
    monkeypatch.setitem(
        TRACKS["mmctr"].stages, "baseline", stage.__class__(**{**stage.__dict__, "run": boom})
    )
    with pytest.raises(KeyboardInterrupt):
        run_stage(synth, "baseline", force=True)
    assert (out / MANIFEST).read_text() == before


def test_missing_upstream_is_clear(synth):
    from recstack.errors import DataError

    with pytest.raises(
        DataError, match=r"needs stage prepare, which has not finished: run `./run.sh prepare`"
    ):
        run_stage(synth, "baseline")


def test_cli_runs_saves_config_and_logs_and_evaluates(tmp_path, capsys):
    args = [f"input_root={tmp_path}/in", f"output_root={tmp_path}/out", *SMALL_SYNTH]
    config = str(ROOT / "configs" / "mmctr_synthetic.yaml")
    assert cli.main(["all", "--config", config, *args]) == 0
    out = capsys.readouterr().out
    assert "submission:" in out and " auc " in out  # the summary: one aligned row per stage, metric named
    assert max(len(line) for line in out.splitlines() if "submission:" not in line) <= 100  # a path aside
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ") and line.split()
    }
    assert (
        rows["ensemble"][-4] == "auc" and float(rows["ensemble"][-3]) > 0.5
    )  # valid AUC, then the local test
    summary_test = float(rows["ensemble"][-2])  # mmctr's builder keeps the test labels: its AUC is shown
    run_dir = tmp_path / "out" / "mmctr" / "synthetic" / "mmctr_synthetic"
    assert "prior_strength" in (run_dir / "config.yaml").read_text()
    logs = list((run_dir / "logs").glob("*-all.log"))
    assert logs and "[baseline] done" in logs[0].read_text()
    sub = run_dir / "ensemble" / "prediction.zip"
    assert cli.main(["evaluate", str(sub), "--config", config, *args]) == 0
    scores = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert 0.5 < float(scores["test_auc"]) <= 1 and int(scores["rows"]) == 150
    assert summary_test == pytest.approx(
        float(scores["test_auc"]), abs=6e-5
    )  # the summary's test = evaluate's
    manifest = json.loads((run_dir / "ensemble" / MANIFEST).read_text())
    assert manifest["figures"]["test_rows"] == 150


def test_cli_bad_input_exits_nonzero_with_message(tmp_path, capsys):
    raw = tmp_path / "in" / "microlens"
    (raw / "MicroLens_1M_x1").mkdir(parents=True)
    args = [f"input_root={tmp_path}/in", f"output_root={tmp_path}/out"]
    rc = cli.main(["prepare", "--config", str(ROOT / "configs" / "mmctr_microlens.yaml"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert "item_info.parquet: file not found" in err
    assert not (tmp_path / "out" / "mmctr" / "microlens" / "mmctr_microlens" / "prepare").exists()
    assert cli.main(["all", "--config", "configs/mmctr_movielens.yaml", "data.nope=1"]) == 2
    assert "unknown config key 'data.nope'" in capsys.readouterr().err


def test_unseen_ids_map_to_oov_and_are_counted(tmp_cfg):
    from recstack.data.raw.mmctr import write_mmctr_raw

    from conftest import tiny_raw

    cfg = tmp_cfg("mmctr_microlens.yaml", "data.max_hist=8")
    raw = tiny_raw()
    raw.valid.user_id[:3] = 999  # users never seen in train
    raw.test.item_id[:] = 29
    keep = (raw.train.item_id != 29) & ~(raw.train.item_seq == 29).any(1)
    for f in ("user_id", "item_seq", "likes_level", "views_level", "item_id", "label"):
        setattr(raw.train, f, getattr(raw.train, f)[keep])
    write_mmctr_raw(raw, Paths(cfg).raw_dir)
    figs = run_stage(cfg, "prepare")["figures"]
    assert figs["valid_rows_unseen_user"] == 3
    assert figs["test_rows_unseen_item"] == 20
    items = pd.read_parquet(Paths(cfg).stage_dir("prepare") / "items.parquet")
    assert items.loc[29, "id_index"] == 1  # the OOV index
    valid = pd.read_parquet(Paths(cfg).stage_dir("prepare") / "samples_valid.parquet")
    assert (valid["user_index"].to_numpy()[:3] == 0).all()
    assert np.array(valid["hist"].iloc[0]).shape == (8,)
