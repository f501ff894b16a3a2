"""CPU seconds of the TencentGR platform readers that grew fastest with size (issue #15), on existing folders.

    PYTHONPATH=src .venv/bin/python bench/bench_tgr_readers.py /tmp/prep/b/tencentgr_0.1/input/synthetic_tgr
    PYTHONPATH=src .venv/bin/python bench/bench_tgr_readers.py DIR [DIR ...] --compare-src /tmp/old/src

Each DIR is a platform-layout folder (predict_set.jsonl, item_feat_dict.json, indexer.pkl), e.g. what
`bench_scale.py --stages build` writes. Prints read_candidates and read_item_feat_dict CPU seconds
(time.process_time: the figure stays meaningful on a loaded machine, where wall time does not).
`--compare-src` times the same readers from another checkout's src/ (e.g. `git archive <commit> src | tar -x`)
and checks both give equal arrays.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections import Counter
from pathlib import Path

import numpy as np

from recstack.data.raw import safe_pickle
from recstack.data.raw import tencentgr_platform as current


def load_other(src: Path):
    spec = importlib.util.spec_from_file_location(
        "other_platform", src / "recstack" / "data" / "raw" / "tencentgr_platform.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def n_rows(folder: Path, cids: np.ndarray) -> int:
    """Item rows as prepare makes them: the indexer's items, then the pool's items it lacks, then row 0."""
    idx = safe_pickle.load(folder / "indexer.pkl")
    known = np.fromiter(idx["i"].keys(), np.int64, len(idx["i"]))
    return max(idx["i"].values()) + 1 + len(np.setdiff1d(np.unique(cids), known))


def timed(fn, *args):
    t = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--compare-src", type=Path, default=None, help="another checkout's src/ to time beside")
    a = p.parse_args()
    mods = {"current": current} | ({"compare": load_other(a.compare_src)} if a.compare_src else {})
    print("| folder | code | candidates | read_candidates CPU s | items | read_item_feat_dict CPU s |")
    print("|---|---|---:|---:|---:|---:|")
    for folder in a.folders:
        got = {}
        for name, mod in mods.items():
            cand, c_s = timed(mod.read_candidates, folder / "predict_set.jsonl", True, Counter())
            rows = n_rows(folder, cand[0])
            feats, f_s = timed(mod.read_item_feat_dict, folder / "item_feat_dict.json", rows, True, Counter())
            got[name] = (cand, feats)
            print(
                f"| {folder} | {name} | {len(cand[0]):,} | {c_s:.1f} | {rows - 1:,} | {f_s:.1f} |", flush=True
            )
        if len(got) == 2:
            (c1, f1), (c2, f2) = got.values()
            same = all(np.array_equal(x, y) for x, y in zip(c1[:2], c2[:2], strict=True))
            same &= list(c1[2]) == list(c2[2]) and all(np.array_equal(c1[2][k], c2[2][k]) for k in c1[2])
            same &= f1.keys() == f2.keys() and all(np.array_equal(f1[k], f2[k]) for k in f1)
            print(f"  {folder}: both codes give equal arrays: {same}")


if __name__ == "__main__":
    main()
