"""The report package's tables against obvious computations, its figures, and its errors on bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from recstack.cli import main
from recstack.errors import DataError
from recstack.metrics import auc
from recstack.paths import Ranked
from recstack.report import analysis, plots
from recstack.report.html import fmt, leaderboard_table

from conftest import ROOT


def test_nearest_items_match_brute_force_and_skip_self_padding_and_empty_rows():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    emb[0] = 0
    emb[7] = 0  # an item without a vector never matches
    nn = analysis.nearest_items(emb, np.array([3, 11]), k=4)
    for q in (3, 11):
        cos = [(float(emb[q] @ emb[i] / np.linalg.norm(emb[q]) / np.linalg.norm(emb[i])), i)
               for i in range(1, 30) if i not in (q, 7)]  # fmt: skip
        expected = [i for _, i in sorted(cos, reverse=True)[:4]]
        got = nn[nn["query"] == q]
        assert got["item"].tolist() == expected and got["rank"].tolist() == [1, 2, 3, 4]
        assert np.allclose(got["cosine"], sorted(c for c, _ in cos)[::-1][:4], atol=1e-5)
    with pytest.raises(DataError, match="query ids must be in 1..29"):
        analysis.nearest_items(emb, np.array([0]))


def test_auc_by_slices_and_calibration():
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(float)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, 400), 0, 1)
    hist = rng.integers(0, 40, 400)
    group = analysis.buckets(hist, analysis.HIST_EDGES, analysis.HIST_LABELS)
    t = analysis.auc_by(y, p, group)
    for g in t.index:
        m = np.asarray(group == g)
        assert t.loc[g, "rows"] == m.sum() and t.loc[g, "auc"] == pytest.approx(auc(y[m], p[m]))
    assert t["rows"].sum() == 400 and "65+" not in t.index  # empty slices are left out
    one_class = analysis.auc_by(np.zeros(4), np.arange(4.0), np.array(["a", "a", "b", "b"]))
    assert one_class["auc"].isna().all()
    both = analysis.slice_auc(y, {"m1": p, "m2": 1 - p}, group)
    assert np.allclose(both["m1"] + both["m2"], 1.0)  # reversed scores: AUC 1 - AUC

    cal = analysis.calibration(y, p, bins=5)
    assert cal["rows"].tolist() == [80] * 5 and cal["mean_pred"].is_monotonic_increasing
    ece = (cal["rows"] * (cal["mean_pred"] - cal["observed"]).abs()).sum() / 400
    assert cal.attrs["ece"] == pytest.approx(ece)
    perfect = analysis.calibration(np.r_[np.zeros(50), np.ones(50)], np.r_[np.zeros(50), np.ones(50)], bins=2)
    assert perfect.attrs["ece"] == 0.0


def test_item_clicks_pca_and_tags():
    assert analysis.item_clicks(np.array([1, 2, 2, 3]), np.array([1, 1, 0, 1]), 5).tolist() == [0, 1, 1, 1, 0]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 6))
    xy = analysis.pca_2d(x, np.arange(1, 50))
    assert xy.shape == (49, 2) and xy[:, 0].var() >= xy[:, 1].var()
    tags = np.array([[0, 0, 3], [0, 3, 1], [0, 5, 3], [5, 1, 1], [0, 0, 0], [9, 9, 9]])  # first: 3 3 5 5 - 9
    assert analysis.main_tag(tags, top=2).tolist() == ["tag 3", "tag 3", "tag 5", "tag 5", "none", "other"]


def test_length_histogram():
    h = analysis.length_histogram(np.array([0, 9, 10, 35, 99, 100, 250]), width=10, cap=100)
    assert h.index[0] == "0-9" and h.index[-1] == "100+" and len(h) == 11
    assert h["0-9"] == 2 and h["10-19"] == 1 and h["30-39"] == 1 and h["90-99"] == 1 and h["100+"] == 2
    assert h.sum() == 7


def test_hit_ranks_and_summary():
    top = np.array([[5, 6, 7], [1, 2, 3], [9, 8, 4]])
    ranks = analysis.hit_ranks(top, np.array([7, 4, 9]))
    assert ranks.tolist() == [2, -1, 0]
    s = analysis.hit_summary(ranks, k=2)
    assert s["HR@2"] == pytest.approx(1 / 3) and s["NDCG@2"] == pytest.approx(1 / 3)
    assert s["found in the whole ranking"] == pytest.approx(2 / 3) and s["median rank when found"] == 1.0


def test_recall_parsing_plain_dict_and_retrieval_report():
    plain = {"covisit": {10: 0.2, "100": 0.5}, "popular": {50: 0.3}}
    assert analysis.recall_by_source(plain) == {"covisit": {10: 0.2, 100: 0.5}, "popular": {50: 0.3}}
    report = {"sources": ["covisit"], "union_recall": 0.6,
              "per_source": {"covisit": {"recall@200": 0.7, "recall@10": 0.2, "score": 0.1, "hr@10": 0.2},
                             "merged": {"recall@10": 0.25, "score": 0.12}}}  # fmt: skip
    assert analysis.recall_by_source(report) == {"covisit": {10: 0.2, 200: 0.7}, "merged": {10: 0.25}}
    scores = analysis.source_scores(report)
    assert scores.loc["covisit", "score"] == 0.1 and "recall@10" not in scores.columns


def test_source_overlap_by_hand():
    c = pd.DataFrame({
        "split": ["valid"] * 4 + ["test"], "user_row": [0, 0, 1, 1, 0], "item": [1, 2, 1, 3, 1],
        "a_rank": [0, 1, -1, 0, 0], "a_score": 1.0, "b_rank": [0, -1, 0, 5, 0],
    })  # fmt: skip
    o = analysis.source_overlap(c)
    assert o.loc["a", "a"] == 1.0 and o.loc["a", "b"] == pytest.approx(2 / 4) == o.loc["b", "a"]
    assert analysis.source_overlap(c, k=3).loc["a", "b"] == pytest.approx(1 / 4)  # b's rank 5 is beyond top 3
    with pytest.raises(DataError, match="_rank"):
        analysis.source_overlap(c[["split", "user_row", "item"]])


def test_manifests_figures_and_importances(tmp_path):
    for stage, when in (("b", "2026-01-02"), ("a", "2026-01-01")):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "manifest.json").write_text(
            json.dumps(
                {"finished_at": when, "figures": {"x": 1, "mod": {"text": {"weight": 0.5}}, "l": [1, 2]}}
            )
        )
    (tmp_path / "unfinished").mkdir()  # no manifest: not a finished stage
    ms = analysis.read_manifests(tmp_path)
    assert list(ms) == ["a", "b"]  # in the order they finished
    assert list(analysis.read_manifests(tmp_path, order=["b", "a"])) == ["b", "a"]  # the pipeline's order
    assert list(analysis.read_manifests(tmp_path, order=["b"])) == ["b", "a"]  # unnamed folders after
    t = analysis.figures_table(ms)
    assert set(t["figure"]) == {"x", "mod.text.weight", "l"} and t["value"].tolist()[2] == "1, 2"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="c/manifest.json"):
        analysis.read_manifests(tmp_path)

    imp = analysis.stack_importances({"figures": {"gain": {"f1": 1.0, "f2": 3.0}, "valid_auc": 0.8}})
    assert imp.index.tolist() == ["f2", "f1"] and imp.name == "gain"
    assert analysis.stack_importances({"figures": {"feature_importance": {"f": 2}}}).tolist() == [2.0]
    assert analysis.stack_importances(None) is None
    assert analysis.stack_importances({"figures": {"valid_auc": 0.8}}) is None

    w = analysis.modality_weights({"figures": {"modalities": {"text": {"dim": 384, "weight": 1.0}}}})
    assert w.loc["text", "weight"] == 1.0


def test_read_curve_and_figures_render(tmp_path):
    assert analysis.read_curve(tmp_path) is None
    (tmp_path / Ranked.CURVE).write_text("fold,epoch,train_loss\nall,1,0.5\n")
    with pytest.raises(DataError, match="missing columns \\['valid_auc'\\]"):
        analysis.read_curve(tmp_path)
    (tmp_path / Ranked.CURVE).write_text(
        "fold,epoch,train_loss,valid_auc,valid_logloss\n0,1,0.6,0.7,0.5\n0,2,0.5,0.72,0.49\n1,1,0.6,0.69,0.5\n"
    )
    curve = analysis.read_curve(tmp_path)
    fig = plots.learning_curves(curve, "rank_x")
    assert len(fig.axes[1].lines) == 2  # one valid-AUC line per fold
    path = plots.save_png(fig, tmp_path / "reports" / "curve.png")
    assert path.read_bytes().startswith(b"\x89PNG") and not list((tmp_path / "reports").glob(".*tmp*"))
    # seqrec's curve: one row per evaluation step, read by its own schema and drawn by step, best step marked
    (tmp_path / Ranked.CURVE).write_text("step,epoch,train_loss\n50,1.0,6.2\n")
    with pytest.raises(DataError, match="missing columns \\['valid_score'\\]"):
        analysis.read_curve(tmp_path)
    (tmp_path / Ranked.CURVE).write_text(
        "step,epoch,train_loss,valid_hr@10,valid_ndcg@10,valid_score\n50,1,6.2,0.2,0.1,0.13\n100,2,5.8,0.25,0.12,0.16\n"
    )
    fig = plots.learning_curves(analysis.read_curve(tmp_path), "seqrec")
    assert len(fig.axes[1].lines) == 4  # score, HR@10, NDCG@10 and the best step's marker
    assert "best step 100: 0.1600" in [t.get_text() for t in fig.axes[1].texts]
    figs = [
        plots.recall_curves({"a": {10: 0.1, 100: 0.4}, "b": {10: 0.2}}),
        plots.heatmap(
            pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["a", "b"], columns=["a", "b"]), "overlap"
        ),
        plots.scatter_2d(np.zeros((3, 2)), ["x", "y", "x"], "map"),
        plots.cover_grid([None, str(tmp_path / "missing.jpg")], ["no cover", "unreadable"]),
        plots.calibration_plot({"m": analysis.calibration(np.r_[0, 1, 0, 1], np.r_[0.1, 0.9, 0.2, 0.8], 2)}),
    ]
    assert all(plots.png_base64(f) for f in figs)


def test_report_command_on_an_empty_run_and_a_bad_key(tmp_path, capsys):
    roots = [f"input_root={tmp_path}/in", f"output_root={tmp_path}/out"]
    assert main(["report", "--config", str(ROOT / "configs" / "mmctr_synthetic.yaml"), *roots]) == 0
    page = (tmp_path / "out" / "mmctr" / "synthetic" / "mmctr_synthetic" / "report.html").read_text()
    assert "no finished stage in this run folder yet" in page and "no leaderboard yet" in page
    assert (
        str(tmp_path / "out" / "mmctr" / "synthetic" / "mmctr_synthetic" / "report.html")
        in capsys.readouterr().out
    )
    assert main(["report", *roots]) == 0  # no --config: one page per default config (both tracks)
    assert (
        tmp_path / "out" / "tencentgr" / "movielens_tgr" / "tencentgr_movielens" / "report.html"
    ).is_file()
    assert main(["report", "--config", str(ROOT / "configs" / "mmctr_synthetic.yaml"), "no_such_key=1"]) == 2


def test_numbers_read_as_figures_and_the_page_leaderboard_fits():
    assert [fmt(v) for v in (653330.4, 1682, 0.897981, 102.891, 2.0, None, np.nan, True, "auc")] == [
        "653,330", "1,682", "0.89798", "102.89", "2", "", "", "True", "auc"]  # fmt: skip
    board = pd.DataFrame({"time": ["2026-12-04T18:11:42+00:00"] * 2, "commit": ["41cfd36"] * 2,
                          "track": "mmctr", "dataset": "movielens", "stage": ["ensemble", "stack"],
                          "model": ["fit(baseline+rank_din+rank_qin+rank_transformer_dcn+stack)", "lgbm_binary"],
                          "metric": "valid_auc", "valid": [0.89, 0.9], "test": [0.88, np.nan], "duration_s": 1.5,
                          "samples_per_s": 653330.0, "fingerprint": "x" * 40, "config_diff": "a=1 " * 60,
                          "valid_figures": "{}" * 100, "sweep": ""})  # fmt: skip
    shown = leaderboard_table(board)
    assert list(shown.columns) == ["stage", "model", "metric", "valid", "local test", "seconds", "samples/s",
                                   "time", "commit"]  # fmt: skip  # no config diff, no empty sweep column
    assert list(shown["stage"]) == ["stack", "ensemble"]  # best valid first
    assert shown["model"].str.len().max() == 30 and shown["time"].iloc[0] == "12-04 18:11"
    assert max(len(fmt(v)) for v in shown.to_numpy().ravel()) <= 30  # no cell wider than a model name
    assert "sweep" in leaderboard_table(board.assign(sweep=["din#3", ""])).columns


def test_stage_figures_for_the_plots(tmp_path):
    embed = {"figures": {"align": {"holdout_loss_start": 6.0, "holdout_loss_by_epoch": [5.8, 5.7]},
                         "modalities": {"text": {"dim": 384, "weight": 0.7, "coverage": 1.0},
                                        "image": {"dim": 512, "weight": 0.3, "coverage": 0.4}}}}  # fmt: skip
    curve = analysis.alignment_curve(embed)
    assert list(curve.index) == [0, 1, 2] and list(curve) == [6.0, 5.8, 5.7]
    assert analysis.alignment_curve({"figures": {}}) is None
    fig = plots.embed_summary(analysis.modality_weights(embed), curve)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["text (384-d)", "image (512-d)"]
    retrieve = {
        "figures": {
            "valid_auc_sim_max": 0.7,
            "valid_auc_covisit": 0.75,
            "valid_auc_fold_mean": 0.1,
            "rows": 3,
        }
    }
    assert analysis.feature_aucs(retrieve).to_dict() == {"covisit": 0.75, "sim_max": 0.7}
    assert analysis.feature_aucs({"figures": {"valid_auc_x": 0.5}}) is None  # one figure is no comparison
    ens = {"figures": {"sources": ["baseline", "rank_din"], "weights": [0.25, 0.75]}}
    assert analysis.ensemble_weights(ens).to_dict() == {"baseline": 0.25, "rank_din": 0.75}
    assert analysis.ensemble_weights({"figures": {"weights": [1.0]}}) is None  # no names: nothing to label
    assert analysis.run_calibration(tmp_path, {"baseline": {}}) == {}  # before prepare
