"""seqrec's short rows (a user who has seen nearly the whole pool) are filled through the shared
retrieve.base.backfill: own unseen items first, then the best seen ones by the unfiltered search, no item
twice, each filled slot scored by that search."""

import numpy as np

from recstack.retrieve.index import IndexSettings, VectorIndex, search_excluding
from recstack.tracks.tencentgr.seqrec import fill_seen


def test_short_rows_are_filled_with_the_best_seen_items():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(6, 4)).astype(np.float32)
    q = rng.normal(size=(2, 4)).astype(np.float32)
    index = VectorIndex(items, IndexSettings(factory="Flat"), ids=np.arange(10, 16))
    seen = [np.array([10, 11, 12, 13]), np.array([], np.int64)]  # user 0 has seen 4 of the 6 pool items
    scores, top = search_excluding(index, q, 4, seen)
    assert (top[0] < 0).sum() == 2 and (top[1] >= 0).all()
    full_s, full_i = index.search(q, 4)
    before = top.copy(), scores.copy()
    top, scores = fill_seen(index, q, top, scores)
    # row 0: its two unseen items, then the best-scored seen ones not yet listed, in search order
    own = [int(x) for x in before[0][0] if x >= 0]
    rest = [int(x) for x in full_i[0] if int(x) not in own][:2]
    assert top[0].tolist() == own + rest and len(set(top[0].tolist())) == 4
    by_item = dict(zip(full_i[0].tolist(), full_s[0].tolist(), strict=True))
    np.testing.assert_allclose(scores[0, 2:], [by_item[i] for i in rest])
    np.testing.assert_array_equal(scores[0, :2], before[1][0, :2])
    np.testing.assert_array_equal(top[1], before[0][1])  # a full row is untouched
    np.testing.assert_array_equal(scores[1], before[1][1])
