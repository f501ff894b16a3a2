"""Fitted blends: weights recovered on toy cases with a known answer, never fitted on the scored rows,
rank averaging, reciprocal-rank fusion weights, the best-validated submission rule, and config errors."""

import numpy as np
import pytest

from recstack.config import ConfigError
from recstack.ensemble.blend import (
    blend_apply,
    cv_blend,
    fit_rrf_weights,
    fit_weights,
    percentile,
    rrf_fuse,
    rrf_table,
    simplex_grid,
)
from recstack.metrics import tencentgr_score
from recstack.pipeline import run_until

from conftest import SMALL_SYNTH


def _toy(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    true_logit = 2.0 * (0.7 * z[:, 0] + 0.3 * z[:, 1])  # the third column is noise
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(float)
    return z, y


def test_fitted_weights_recover_the_known_mix_and_ignore_noise():
    z, y = _toy()
    w = fit_weights(z, y)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[:2] == pytest.approx([0.7, 0.3], abs=0.04) and w[2] < 0.03


def test_weights_stay_non_negative_for_a_harmful_source():
    z, y = _toy()
    z[:, 2] = -2 * y + np.random.default_rng(1).normal(size=len(y))  # anti-predictive beyond z0, z1:
    # an unconstrained fit gives it a large negative weight
    w = fit_weights(z, y)
    assert w[2] == 0.0 and w.sum() == pytest.approx(1.0)
    assert fit_weights(z[:, :1], y).tolist() == [1.0]  # one source: weight 1


def test_cv_blend_scores_each_fold_with_weights_fitted_on_the_others():
    z, y = _toy(n=3000)
    fold_of = np.arange(len(y)) % 3
    oof, weights = cv_blend(z, y, fold_of)
    for k, w in enumerate(weights):
        held = fold_of == k
        assert np.allclose(w, fit_weights(z[~held], y[~held]))
        assert np.allclose(oof[held], blend_apply(z[held], w))


def test_percentile_ranks_with_ties():
    assert percentile(np.array([0.3, 0.1, 0.3, 0.9])).tolist() == [0.625, 0.25, 0.625, 1.0]


def test_simplex_grid_covers_the_simplex():
    g = simplex_grid(3, 4)
    assert len(g) == 15 and np.allclose(g.sum(1), 1) and (g >= 0).all()
    assert {tuple(r) for r in g} >= {(1, 0, 0), (0, 0, 1), (0.5, 0.25, 0.25)}


def test_rrf_weights_favour_the_source_that_finds_the_target():
    rng = np.random.default_rng(0)
    n = 200
    target = np.arange(n) + 1000
    good = np.stack([np.r_[t, rng.choice(500, 19, replace=False)] for t in target])  # target first
    decoys = good[:, 1:11]
    bad = np.c_[decoys, rng.choice(np.arange(500, 900), (n, 10))]  # good's decoys ranked first
    items, rr = rrf_table([good, bad])
    w = fit_rrf_weights(items, rr, target, k=10)
    assert w[0] > w[1] and w.sum() == pytest.approx(1.0)
    fused = rrf_fuse(items, rr, w, 10)[0]
    assert tencentgr_score(fused, target)["score"] == pytest.approx(1.0)
    even = rrf_fuse(items, rr, np.array([0.5, 0.5]), 10)[0]
    assert tencentgr_score(even, target)["score"] < 1.0  # equal weights let the shared decoys win


def test_rrf_table_keeps_every_item_once():
    items, rr = rrf_table([np.array([[1, 2, 3]]), np.array([[3, 4, 1]])])
    assert sorted(items[0].tolist()) == [1, 2, 3, 4]
    j = items[0].tolist().index(3)
    assert rr[0, j].tolist() == pytest.approx([1 / 63, 1 / 61])


@pytest.fixture
def synth(tmp_cfg):
    def make(*overrides):
        return tmp_cfg(
            "mmctr_synthetic.yaml", *SMALL_SYNTH, "stack.sources=[baseline]", "stack.folds=3", *overrides
        )

    return make


def test_stage_submits_the_best_validated_candidate(synth):
    for method in ("fit", "rank"):
        figs = run_until(synth("ensemble.sources=[baseline,stack]", f"ensemble.method={method}"), "ensemble")[
            "ensemble"
        ]
        figs = figs["figures"]
        cands = {k.removeprefix("valid_auc_"): v for k, v in figs.items() if k.startswith("valid_auc_")}
        assert set(cands) == {"baseline", "stack", "blend"}
        assert figs["submitted"] == max(cands, key=cands.get) and figs["valid_auc"] == max(cands.values())
        assert sum(figs["weights"]) == pytest.approx(1.0) and len(figs["weights_folds"]) == 5
    figs = run_until(synth("ensemble.sources=[baseline,stack]", "ensemble.submit=blend"), "ensemble")[
        "ensemble"
    ]["figures"]
    assert figs["submitted"] == "blend" and figs["valid_auc"] == figs["valid_auc_blend"]


def test_fixed_weights_are_still_accepted(synth):
    figs = run_until(
        synth("ensemble.method=fixed", "ensemble.sources=[baseline,stack]", "ensemble.weights=[3,1]"),
        "ensemble",
    )
    assert figs["ensemble"]["figures"]["weights"] == [0.75, 0.25]


def test_config_errors(synth):
    with pytest.raises(ConfigError, match="ensemble.weights are fitted when ensemble.method=fit"):
        synth("ensemble.weights=[1.0]")
    with pytest.raises(ConfigError, match="same length"):
        synth("ensemble.method=fixed", "ensemble.weights=[1.0,2.0]")
    with pytest.raises(ConfigError, match="'ensemble.method' is 'mean'"):
        synth("ensemble.method=mean")
    with pytest.raises(ConfigError, match="'ensemble.submit' is 'last'"):
        synth("ensemble.submit=last")
