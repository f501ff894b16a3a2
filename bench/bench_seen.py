"""The seen-item policy's figures and the history source's settings, on a finished run's prepare folder.

    ./run.sh prepare --config configs/tencentgr_synthetic.yaml
    .venv/bin/python bench/bench_seen.py [--config FILE] [--set key=value ...]

Prints the decision of `exclude_seen: auto` (tgr_prepared.seen_policy) with its figures on the stacker's
training queries, the same shares on the valid users for comparison (never used by the decision), then the
history source's top-10 score (0.31 HR@10 + 0.69 NDCG@10) on the training queries and on the valid users for a
grid of recency / exposure weight / history length: its defaults are checked on the training queries first.
No local_truth is read; numpy only, seconds.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pyarrow.parquet as pq

from recstack.config import HistorySourceConfig, load_config
from recstack.data.tables.tgr_prepared import (
    pool_items,
    read_events,
    read_table,
    repeat_shares,
    seen_policy,
    stack_queries,
)
from recstack.metrics import tencentgr_score
from recstack.paths import Paths, PreparedTGR
from recstack.retrieve.base import Events, query_histories
from recstack.retrieve.history import history_scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tencentgr_synthetic.yaml")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    prep = Paths(cfg).stage_dir("prepare")
    ev = read_events(prep)
    valid = read_table(prep, PreparedTGR.VALID)
    train = stack_queries(ev, valid, int(cfg.data.stack_users), int(cfg.seed), int(cfg.data.stack_cuts))
    policy = seen_policy("auto", ev, train)
    print(f"decision: exclude_seen={policy.exclude} ({policy.figures['reason']})")
    print(f"training queries: {policy.figures}")
    print(f"valid users (for comparison only): {repeat_shares(ev, valid)}")

    events = Events(ev["user"], ev["item"], ev["action"], ev["ts"])
    n_rows = pq.read_metadata(prep / PreparedTGR.ITEMS).num_rows
    pool = pool_items(prep)
    pool = pool[pool > 0]  # item 0: a cold candidate (as the retrieve stage)
    mask = np.zeros(n_rows, bool)
    mask[pool] = True
    qs = {name: (query_histories(events, t["user"].to_numpy(), name, t["event_index"].to_numpy()), t["item"].to_numpy())
          for name, t in (("train", train), ("valid", valid))}  # fmt: skip
    h = cfg.retrieve.history
    default = (float(h.recency), float(h.exposure_weight), int(h.history))
    print(f"\n{'recency':>7} {'exposure':>8} {'history':>7} {'train':>7} {'valid':>7}")
    grid = itertools.product((0.8, 0.9, 0.95, 0.98, 0.99, 1.0), (0.0, 0.3, 0.5, 1.0), (20, 100))
    for recency, exposure, length in [default, *grid]:
        st = HistorySourceConfig(
            history=length,
            recency=recency,
            half_life_hours=h.half_life_hours,
            exposure_weight=exposure,
            click_weight=h.click_weight,
            conversion_weight=h.conversion_weight,
        )
        s = {
            n: tencentgr_score(history_scores(q, st, mask, 10).items, t, k=10)["score"]
            for n, (q, t) in qs.items()
        }
        tag = "  <- default" if (recency, exposure, length) == default else ""
        print(
            f"{recency:>7} {exposure:>8} {length:>7} {s['train']:>7.4f} {s['valid']:>7.4f}{tag}", flush=True
        )


if __name__ == "__main__":
    main()
