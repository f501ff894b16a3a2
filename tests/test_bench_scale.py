"""bench/bench_scale.py's helpers: the /usr/bin/time -v parse, the sizes at a scale, the stage order and what
each stage needs (a stage after a stopped one must not run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "bench_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TIME_V = """some stage output\r50/100 steps
\tCommand being timed: "timeout 10 python -m recstack prepare"
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5
\tMaximum resident set size (kbytes): 2097152
\tExit status: 0
"""


def test_parse_time_reads_wall_and_peak(tmp_path):
    b = _bench()
    wall, rss = b.parse_time(TIME_V)
    assert wall == pytest.approx(3723.5)
    assert rss == pytest.approx(2.0)
    assert b.parse_time("\tElapsed (wall clock) time (h:mm:ss or m:ss): 0:07.25\n") == (7.25, None)
    log = tmp_path / "x.log"
    log.write_text(TIME_V)
    assert b.last_progress(log) == "50/100 steps"  # the line before /usr/bin/time's report


def test_sizes_scale_and_stage_dependencies():
    b = _bench()
    sizes = dict(s.split("=", 1) for s in b.sizes("tencentgr", 0.1))
    assert sizes["data.synthetic_tgr.users"] == "100000"
    assert sizes["data.synthetic_tgr.candidates"] == "66000"
    names, up = b.order("tencentgr", b.sizes("tencentgr", 0.1) + b.SCALE_OVERRIDES["tencentgr"])
    assert names.index("prepare") < names.index("seqrec") < names.index("retrieve") < names.index("stack")
    assert {"prepare", "retrieve"} <= up["stack"]
    assert "stack" not in up["baseline"]
    names, up = b.order("mmctr", b.sizes("mmctr", 0.1))
    assert {"rank_din", "rank_qin", "baseline"} <= up["stack"]
