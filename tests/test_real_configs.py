"""The configs a user runs on a challenge download (and the default MovieLens runs) submit the learned models,
and run end to end on data in the release layouts: a config whose ensemble lists only the baseline would
submit popularity / logistic-regression answers after training every model."""

from __future__ import annotations

import json

import pytest

from recstack.config import SyntheticTGRConfig, load_config
from recstack.data.builders.synthetic_tgr import build_tgr_synthetic
from recstack.data.raw.mmctr import write_mmctr_raw
from recstack.data.raw.tencentgr_parquet import write_parquet_layout
from recstack.errors import DataError, ModalityAbsent
from recstack.paths import Paths, Submission
from recstack.pipeline import run_until

from conftest import ROOT, TINY_SEQREC, tiny_raw

LEARNED = {
    "mmctr": {"rank_din", "rank_qin", "rank_transformer_dcn", "stack"},
    "tencentgr": {"retrieve", "stack", "seqrec"},
}


def _assert_best_validated(figures: dict, metric: str, sources: list[str]) -> None:
    """The ensemble scored every learned source and the blend on valid and submitted the best of them."""
    scores = {c: figures[f"valid_{metric}_{c}"] for c in [*sources, "blend"]}
    assert figures["submitted"] in scores and scores[figures["submitted"]] == max(scores.values()), figures


@pytest.mark.parametrize(
    "config",
    ["mmctr_microlens.yaml", "mmctr_movielens.yaml", "tencentgr_real.yaml", "tencentgr_movielens.yaml"],
)
def test_user_configs_ensemble_the_learned_models(config):
    cfg = load_config(ROOT / "configs" / config, [])
    missing = LEARNED[cfg.track] - set(cfg.ensemble.sources)
    assert not missing, (
        f"{config}: ensemble.sources {list(cfg.ensemble.sources)} leaves out {sorted(missing)}"
    )
    assert cfg.ensemble.submit == "best"


def test_tencentgr_real_config_runs_every_model_on_the_two_folder_release(tmp_cfg):
    """The parquet release as published (training and evaluation folders) through the shipped real config:
    the submission is the best validated of retrieve, the reranker, seqrec and their blend."""
    cfg = tmp_cfg("tencentgr_real.yaml", "data.mm_feats=['81']", "data.valid_users=100", "embed.dim=16",
                  "embed.align.epochs=1")  # fmt: skip
    syn = SyntheticTGRConfig(users=300, items=600, events_per_user=30, topics=8, candidates=200,
                             predict_users=40, mm_feats=["81"], seed=3)  # fmt: skip
    raw, _ = build_tgr_synthetic(syn)
    write_parquet_layout(raw, Paths(cfg).raw_dir, two_folders=True)
    manifests = run_until(cfg, "ensemble")
    assert manifests["prepare"]["figures"]["layout"] == "parquet"
    for stage in ("seqrec", "retrieve", "stack"):
        assert stage in manifests, f"{stage} did not run"
    _assert_best_validated(manifests["ensemble"]["figures"], "score", ["retrieve", "stack", "seqrec"])
    out = Paths(cfg).stage_dir("ensemble")
    answers = json.loads((out / Submission.TGR_JSON).read_text())
    assert len(answers["user_list"]) == len(set(answers["user_list"])) == len(raw.predict_users)
    assert all(len(set(top)) == 10 for top in answers["top10s"])


def test_mmctr_microlens_config_runs_every_model(tmp_cfg):
    cfg = tmp_cfg("mmctr_microlens.yaml", "data.max_hist=8", "embed.text.enabled=false", "embed.align.epochs=1",
                  "rank.epochs=1", "stack.folds=3")  # fmt: skip
    write_mmctr_raw(tiny_raw(n_items=40, users=30), Paths(cfg).raw_dir)
    manifests = run_until(cfg, "ensemble")
    sources = ["baseline", "rank_din", "rank_qin", "rank_transformer_dcn", "stack"]
    for stage in sources:
        assert stage in manifests, f"{stage} did not run"
    _assert_best_validated(manifests["ensemble"]["figures"], "auc", sources)
    assert (Paths(cfg).stage_dir("ensemble") / Submission.MMCTR_CSV).is_file()


def test_tencentgr_real_config_runs_without_the_multimodal_files(tmp_path):
    """A release written without mm_emb/ (as a MovieLens conversion is): the real config goes on without
    emb_81 (coverage 0, counted, warned); required (the schema default) it stops naming the folder; a
    feature present at another width is an error either way."""

    def cfg(run: str, *overrides: str):
        roots = [f"input_root={tmp_path / run / 'in'}", f"output_root={tmp_path / run / 'out'}"]
        return load_config(ROOT / "configs" / "tencentgr_real.yaml", [*roots, *TINY_SEQREC, *overrides])

    def release(mm_feats: list[str], mm_dims: dict[str, int] | None = None):
        syn = SyntheticTGRConfig(users=300, items=600, events_per_user=30, topics=8, candidates=200,
                                 predict_users=40, mm_feats=mm_feats, mm_dims=mm_dims or {}, seed=3)  # fmt: skip
        return build_tgr_synthetic(syn)[0]

    no_mm = cfg("a", "data.valid_users=100", "embed.dim=16", "embed.align.epochs=1")
    write_parquet_layout(release([]), Paths(no_mm).raw_dir)
    manifests = run_until(no_mm, "ensemble")
    figures = manifests["prepare"]["figures"]
    assert figures["mm_81_absent"] == 1 and figures["coverage_mm_81"] == 0.0
    assert (Paths(no_mm).stage_dir("ensemble") / Submission.TGR_JSON).is_file()

    required = cfg("a", "data.mm_required=true", f"output_root={tmp_path / 'required'}")
    with pytest.raises(ModalityAbsent, match="emb_81_32_parquet: folder not found"):
        run_until(required, "prepare")
    assert not Paths(required).stage_dir("prepare").exists()

    other_width = cfg("b")
    write_parquet_layout(release(["81"], {"81": 4}), Paths(other_width).raw_dir, {"81": 4})
    with pytest.raises(
        DataError, match=r"found emb_81_4_parquet \(set its dimension in data.emb_dims\)"
    ) as e:
        run_until(other_width, "prepare")
    assert not isinstance(e.value, ModalityAbsent)
