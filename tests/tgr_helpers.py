"""A tiny hand-made TencentGR dataset for reader/writer tests."""

from __future__ import annotations

import numpy as np

from recstack.data.raw.tencentgr import TgrEvents, TgrRaw


def tiny_tgr(seed: int = 0) -> TgrRaw:
    rng = np.random.default_rng(seed)
    n_users, n_items = 6, 20
    users, items, actions, ts = [], [], [], []
    for u in range(1, n_users + 1):
        n = int(rng.integers(3, 9))
        users += [u] * n
        items += rng.integers(1, n_items + 1, n).tolist()
        actions += rng.choice([0, 0, 1, 2], n).tolist()
        ts += sorted(rng.integers(1_700_000_000, 1_700_900_000, n).tolist())
    ev = TgrEvents(*(np.array(x, np.int64) for x in (users, items, actions, ts)))
    pred_users = np.array([2, 5], np.int64)
    pe = TgrEvents(np.array([2, 2, 5], np.int64), np.array([3, 4, 7], np.int64), np.array([0, 1, 1], np.int64),
                   np.array([1_701_000_000, 1_701_000_100, 1_701_000_050], np.int64))  # fmt: skip
    creative = np.r_[0, 20_000_000_000 + np.arange(1, n_items + 1)].astype(np.int64)
    cand = np.r_[creative[[1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 20]], 30_000_000_001].astype(
        np.int64
    )  # one cold
    item_sparse = {"100": np.r_[0, rng.integers(1, 5, n_items)], "101": np.r_[0, rng.integers(1, 9, n_items)]}
    mm81 = rng.normal(size=(n_items + 1, 32)).astype(np.float32)
    mm82 = rng.normal(size=(n_items + 1, 8)).astype(np.float32)
    return TgrRaw(
        user_raw=np.array([""] + [f"user_{u:03d}" for u in range(1, n_users + 1)], dtype=object),
        creative_id=creative,
        item_sparse=item_sparse,
        user_sparse={
            "103": np.r_[0, rng.integers(1, 6, n_users)],
            "104": np.r_[0, rng.integers(1, 3, n_users)],
        },
        user_array={"106": [[]] + [rng.integers(1, 9, rng.integers(1, 4)).tolist() for _ in range(n_users)]},
        events=ev,
        profile_ts=np.full(n_users + 1, 1_701_500_000, np.int64),
        predict_users=pred_users,
        predict_events=pe,
        cand_creative_id=cand,
        cand_features={"100": np.r_[item_sparse["100"][[1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 20]], 3]},
        mm={
            "81": (creative[1:15], mm81[1:15]),  # partial coverage: items 15..20 have none
            "82": (
                np.r_[creative[1:5], cand[-1]],
                np.r_[mm82[1:5], mm82[:1] + 1],
            ),  # incl. the cold candidate
        },
    )
