"""The tencentgr track end to end through the CLI on a MovieLens-shaped wheel: build, prepare, embed,
popularity baseline, validated submission, evaluate; plus the popularity model and the submission validator."""

import json

import numpy as np
import pandas as pd
import pytest

from recstack import cli
from recstack.artifacts import sha256_file
from recstack.config import load_config
from recstack.ensemble.submission import validate_tgr, write_tgr
from recstack.errors import DataError
from recstack.models.popularity import decayed_popularity, recommend
from recstack.tracks.tencentgr import TENCENTGR
from recstack.tracks.tencentgr.prepare import valid_cap

from conftest import ROOT
from test_movielens import fake_wheel


def test_cli_end_to_end(tmp_path, capsys):
    cache = tmp_path / "in" / "_cache"
    cache.mkdir(parents=True)
    wheel = fake_wheel(cache / "recbole-1.2.1-py3-none-any.whl", users=30, items=60, per_user=12)
    args = [
        f"input_root={tmp_path}/in", f"output_root={tmp_path}/out", f"data.movielens.wheel_sha256={sha256_file(wheel)}",
        "data.valid_users=100",  # more than the 24 training users: capped (prepare.valid_cap)
    ]  # fmt: skip
    config = str(ROOT / "configs" / "tencentgr_movielens.yaml")
    assert cli.main(["all", "--config", config, *args]) == 0
    out = capsys.readouterr().out
    assert (
        max(len(line) for line in out.splitlines() if "submission:" not in line) <= 100
    )  # a path aside  # the summary: one aligned row per stage
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ") and line.split()
    }
    assert rows["seqrec"][1:3] == ["seqrec", "score"]  # then valid and local test, checked below
    run = tmp_path / "out" / "tencentgr" / "movielens_tgr" / "tencentgr_movielens"
    # every model stage's manifest records its local test, per source (retrieve) and per candidate (ensemble),
    # scored from the builder's answers after the stage; the submission's test is what `evaluate` says
    tests = {s: json.loads((run / s / "manifest.json").read_text()).get("test", {}) for s in
             ("baseline", "seqrec", "retrieve", "stack", "ensemble", "prepare")}  # fmt: skip
    cfg = load_config(config, args)
    assert tests["prepare"] == {}
    for s in ("baseline", "seqrec", "retrieve", "stack", "ensemble"):  # = the track's plain test_metric
        assert tests[s]["test_score"] == pytest.approx(TENCENTGR.test_metric(cfg, run / s), abs=1e-5), s
    assert float(rows["seqrec"][4]) == pytest.approx(tests["seqrec"]["test_score"], abs=6e-5)  # the summary's
    assert {"test_score_covisit", "test_score_merged"} <= set(tests["retrieve"])
    ens = tests["ensemble"]
    assert {"test_score_blend", "test_score_seqrec", "test_score_retrieve"} <= set(ens)
    assert (
        ens["test_score"]
        == ens[
            f"test_score_{json.loads((run / 'ensemble' / 'manifest.json').read_text())['figures']['submitted']}"
        ]
    )
    assert ens["test_score_seqrec"] == tests["seqrec"]["test_score"]  # a candidate's test is its stage's
    sub = json.loads((run / "ensemble" / "submission.json").read_text())
    assert len(sub["user_list"]) == 6 and all(len(set(r)) == 10 for r in sub["top10s"])  # 20% of 30 held out
    raw = tmp_path / "in" / "movielens_tgr"
    assert (raw / "seq.jsonl").is_file() and (raw / "local_truth" / "predict_truth.parquet").is_file()
    assert cli.main(["evaluate", str(run / "ensemble" / "submission.json"), "--config", config, *args]) == 0
    scores = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert 0 <= float(scores["test_score"]) <= 1 and int(scores["rows"]) == 6
    assert float(scores["test_score"]) == pytest.approx(tests["ensemble"]["test_score"], abs=1e-5)
    truth = pd.read_parquet(raw / "local_truth" / "predict_truth.parquet")  # the SE by hand, from the file
    rank = [
        row.index(c) if c in row else None for row, c in zip(sub["top10s"], truth["creative_id"], strict=True)
    ]
    gains = np.array([0.0 if r is None else 0.31 + 0.69 / np.log2(r + 2) for r in rank])
    assert ens["test_score_se"] == pytest.approx(gains.std(ddof=1) / np.sqrt(len(gains)), abs=1e-5)
    # the run report of a finished tencentgr run: every stage, seqrec's learning curve by step among the images
    assert cli.main(["report", "--config", config, *args]) == 0
    page = (run / "report.html").read_text()
    assert "seqrec: learning curves" in page and "ensemble: blend weights" in page
    assert "embed: modality weights, coverage and alignment" in page
    assert page.count("<img") >= 5  # embed, seqrec, recall@K, the stacker's importances, the blend weights
    manifest = json.loads((run / "prepare" / "manifest.json").read_text())
    assert manifest["figures"]["layout"] == "platform" and manifest["figures"]["items_with_text"] == 60
    # a quarter of the training users with a click stay outside validation, so the reranker has queries
    assert 0 < manifest["figures"]["valid_users"] <= int(0.75 * manifest["figures"]["training_users"])
    stack = json.loads((run / "stack" / "manifest.json").read_text())["figures"]
    assert stack["train_queries"] > 0
    embed = json.loads((run / "embed" / "manifest.json").read_text())["figures"]  # titles -> text vectors
    assert set(embed["modalities"]) == {"text"} and embed["items"] == 60 and embed["align"]["pairs_train"] > 0
    assert np.load(run / "embed" / "item_emb.npy").shape == (61, 128)
    assert not (run / "embed" / "item_info.parquet").exists()  # the MMCTR Task 1 export is mmctr-only


def test_valid_users_are_capped_to_leave_level2_queries(caplog):
    events = {"user": np.repeat(np.arange(1, 9), 3), "action": np.tile([0, 1, 0], 8)}
    events["action"][events["user"] == 8] = 0  # a user without a click counts for neither set
    assert valid_cap(events, 3) == 3  # asked for fewer than the cap: as asked
    assert valid_cap(events, 100) == 5 and "validating on 5" in caplog.text  # 75% of the 7 with a click


def test_popularity_decays_and_skips_seen_items():
    item = np.array([1, 1, 2, 3, 3, 3])
    action = np.array([1, 1, 1, 0, 0, 2])
    ts = np.array([0, 0, 86_400 * 7, 86_400 * 7, 86_400 * 7, 86_400 * 7])
    pop = decayed_popularity(item, action, ts, 5, half_life_days=7, conversion_weight=2.5)
    assert pop.tolist() == pytest.approx([0, 1.0, 1.0, 2.5, 0])  # two clicks one half-life ago = 1
    top, _ = recommend(pop, np.array([1, 2, 3, 4]), [np.array([3]), np.array([], int)], k=3)
    assert top.tolist() == [[1, 2, 4], [3, 1, 2]]  # ties keep pool order
    top, _ = recommend(pop, np.array([1, 2, 3]), [np.array([1, 2, 3])], k=3)
    assert sorted(top[0].tolist()) == [1, 2, 3]  # the whole pool seen: filled with seen items


def test_tgr_validator():
    pool = np.arange(100, 130)
    ok = [list(range(100, 110)), list(range(110, 120))]
    validate_tgr(ok, ["a", "b"], ["a", "b"], pool)
    cases = [
        (ok, ["b", "a"], "user 0 is 'b'; expected 'a'"),
        ([ok[0][:9], ok[1]], ["a", "b"], r"user 0 \(a\) has 9 items; expected 10"),
        ([ok[0], [110] * 10], ["a", "b"], r"user 1 \(b\) repeats an item"),
        ([ok[0], list(range(125, 135))], ["a", "b"], r"creative_id 130, which is not in the candidate pool"),
        (ok[:1], ["a"], "answers 1 users; the predict set has 2"),
    ]
    for top, users, msg in cases:
        with pytest.raises(DataError, match=msg):
            validate_tgr(top, users, ["a", "b"], pool)


def test_tgr_invalid_submission_writes_nothing(tmp_path):
    with pytest.raises(DataError):
        write_tgr(tmp_path, np.array([[1] * 10]), ["u"], np.arange(20), ["u"])
    assert list(tmp_path.iterdir()) == []


def test_prepare_detects_the_parquet_release(tmp_cfg):
    from recstack.data.raw.tencentgr_parquet import write_parquet_layout
    from recstack.paths import Paths
    from recstack.pipeline import run_until

    from tgr_helpers import tiny_tgr

    cfg = tmp_cfg(
        "tencentgr_real.yaml",
        "data.mm_feats=['81','82']",
        "data.emb_dims={'82': 8}",
        "data.valid_users=3",
        "ensemble.sources=[retrieve,seqrec]",  # six users: no reranker queries (the full config: test_real_configs)
    )
    write_parquet_layout(tiny_tgr(), Paths(cfg).raw_dir, {"82": 8})
    manifests = run_until(cfg, "ensemble")
    assert manifests["prepare"]["figures"]["layout"] == "parquet"
    assert manifests["prepare"]["figures"]["candidates_cold"] == 1
    assert (Paths(cfg).stage_dir("ensemble") / "submission.json").is_file()
