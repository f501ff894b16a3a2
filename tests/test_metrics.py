import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recstack.metrics import auc, gauc, hit_rate_at_k, logloss, ndcg_at_k, tencentgr_score


def test_auc_hand_example():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_ties_hand_example():
    # one pos/neg pair tied at 0.5 counts 1/2: pairs (pos>neg) = 1 + 0.5 + 1 + 1 -> 3.5/4
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 5000)
    s = np.round(rng.random(5000) + 0.3 * y, 1)  # heavy ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_errors():
    with pytest.raises(ValueError, match="one class"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="lengths differ"):
        auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, np.nan])


@pytest.mark.parametrize("bad", [np.nan, 2.0, -1.0, 0.5])
@pytest.mark.parametrize("metric", ["auc", "logloss", "gauc"])
def test_labels_must_be_0_or_1(bad, metric):
    """A NaN label once counted as a positive (astype(bool)); any label but 0/1 is refused, row named."""
    y = np.array([0.0, 1.0, bad, 0.0, 1.0])
    s = np.array([0.1, 0.9, 0.8, 0.2, 0.7])
    call = {"auc": lambda: auc(y, s), "logloss": lambda: logloss(y, s), "gauc": lambda: gauc([1] * 5, y, s)}
    with pytest.raises(ValueError, match=r"y_true must be 0 or 1; row 2 is"):
        call[metric]()


def test_labels_of_any_0_1_dtype():
    s = [0.1, 0.4, 0.35, 0.8]
    for y in ([0, 0, 1, 1], [False, False, True, True], np.array([0, 0, 1, 1], np.float32)):
        assert auc(y, s) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="numeric 0/1"):
        auc(["0", "0", "1", "1"], s)


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    p = rng.random(1000)
    p[:3] = [0.0, 1.0, 1e-12]  # exercise clipping
    assert logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-10)
    assert logloss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)


def test_gauc_hand_example():
    # user 7: auc([0,0,1,1],[.1,.4,.35,.8]) = 0.75 over 4 rows; user 3: auc = 1.0 over 2 rows;
    # user 5 has only positives -> skipped. Weighted: (4*0.75 + 2*1.0) / 6.
    user = [7, 3, 7, 5, 7, 3, 5, 7]
    y = [0, 0, 0, 1, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.4, 0.9, 0.35, 0.6, 0.1, 0.8]
    assert gauc(user, y, s) == pytest.approx((4 * 0.75 + 2 * 1.0) / 6)


def test_gauc_matches_per_user_sklearn():
    rng = np.random.default_rng(4)
    n = 20000
    user = rng.integers(0, 500, n)
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.2 * y, 1)
    num = den = 0.0
    for u in np.unique(user):
        m = user == u
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * roc_auc_score(y[m], s[m])
            den += m.sum()
    assert gauc(user, y, s) == pytest.approx(num / den, abs=1e-12)


def test_gauc_no_valid_user_is_nan():
    assert math.isnan(gauc([1, 1, 2], [1, 1, 0], [0.1, 0.2, 0.3]))


TOPK = np.array([[5, 1, 2, 3], [1, 2, 5, 3], [1, 2, 3, 4]])
TARGET = np.array([5, 5, 5])  # position 0, position 2, absent


def test_hr_ndcg_hand_example():
    assert hit_rate_at_k(TOPK, TARGET, k=4) == pytest.approx(2 / 3)
    assert ndcg_at_k(TOPK, TARGET, k=4) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # with k=2 the position-2 hit falls outside the cut-off
    assert hit_rate_at_k(TOPK, TARGET, k=2) == pytest.approx(1 / 3)
    assert ndcg_at_k(TOPK, TARGET, k=2) == pytest.approx(1 / 3)


def test_tencentgr_score_combination():
    out = tencentgr_score(TOPK, TARGET, k=4)
    assert set(out) == {"hr@4", "ndcg@4", "score"}
    assert out["score"] == pytest.approx(0.31 * (2 / 3) + 0.69 * 0.5)


def test_tencentgr_action_weighted():
    weights = {1: 1.0, 2: 2.5, 0: 0.0}
    # user 0 conversion (w 2.5, hit at 0), user 1 click (w 1, hit at 2), user 2 exposure (w 0, miss)
    out = tencentgr_score(TOPK, TARGET, k=4, action=[2, 1, 0], action_weights=weights)
    hr_w = (2.5 * 1 + 1.0 * 1) / 3.5
    ndcg_w = (2.5 * 1.0 + 1.0 * 0.5) / 3.5
    assert out["weighted_hr@4"] == pytest.approx(hr_w)
    assert out["weighted_ndcg@4"] == pytest.approx(ndcg_w)
    assert out["weighted_score"] == pytest.approx(0.31 * hr_w + 0.69 * ndcg_w)
    assert out["score"] == pytest.approx(0.31 * (2 / 3) + 0.69 * 0.5)  # unweighted kept


def test_topk_errors():
    with pytest.raises(ValueError, match="lengths differ"):
        hit_rate_at_k(TOPK, [5, 5], k=2)
    with pytest.raises(ValueError, match="topk width"):
        ndcg_at_k(TOPK, TARGET, k=10)
    with pytest.raises(ValueError, match="without a weight"):
        tencentgr_score(TOPK, TARGET, k=4, action=[1, 3, 1], action_weights={1: 1.0})
    with pytest.raises(ValueError, match="together"):
        tencentgr_score(TOPK, TARGET, k=4, action=[1, 1, 1])
