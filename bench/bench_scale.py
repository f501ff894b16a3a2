"""Per-stage wall time and peak RSS of a track's pipeline on synthetic data at a fraction of competition size.

    PYTHONPATH=src .venv/bin/python bench/bench_scale.py --track tencentgr --scale 0.1
    PYTHONPATH=src .venv/bin/python bench/bench_scale.py --track mmctr --scale 1.0 --timeout 1500
    PYTHONPATH=src .venv/bin/python bench/bench_scale.py --table          # every recorded run, one table

Scale 1.0 = TencentGR-1M (1M users x ~90 events, 4.78M items, 660k candidates, 50k predict users) for
tencentgr, MicroLens-1M (360,000 users x 12 rows = 3.6M train rows, 91,717 items, no covers) for mmctr;
every size is multiplied by --scale. Each stage runs as its own process, in pipeline order,
`/usr/bin/time -v timeout <s> python -m recstack <stage> --config ... <overrides>`, so the peak RSS is the
stage's own (its upstream stages are already done and skipped by the cache; the skip check is in the time).
A stage that runs past --timeout is stopped: its row says so, with the last progress line of its log, and the
stages that need it are not run. Results are appended to <root>/scale_results.jsonl (one JSON line per
stage); --table prints them. The overrides that keep CPU runs bounded (SCALE_OVERRIDES) are printed with
the table; pass more as key=value.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from recstack.config import load_config
from recstack.pipeline import needs_of, stages_for

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "tencentgr": ROOT / "configs" / "tencentgr_synthetic.yaml",
    "mmctr": ROOT / "configs" / "mmctr_synthetic.yaml",
}
# sizes at scale 1.0 (multiplied by --scale, at least 1)
FULL = {
    "tencentgr": {
        "data.synthetic_tgr.users": 1_000_000,
        "data.synthetic_tgr.items": 4_780_000,
        "data.synthetic_tgr.candidates": 660_000,
        "data.synthetic_tgr.predict_users": 50_000,  # users / 20, as bench_prepare.py
        "data.valid_users": 10_000,  # the schema defaults (the synthetic config's 2,000 is for its 2k users)
        "data.stack_users": 10_000,
    },
    "mmctr": {"data.synthetic.users": 360_000, "data.synthetic.items": 91_717},
}
# tencentgr: the 32-d emb_81 only (the official baseline's default): 4.78M items x the 1024-d emb_82 would be
# 16 GB of float32 in the builder and ~47 GB of JSON on disk, more than this 24 GiB / 76 GB-free VM holds
FIXED = {
    "mmctr": ["data.synthetic.images=false"],
    "tencentgr": ["data.mm_feats=[81]", "data.synthetic_tgr.mm_feats=[81]"],
}
# CPU-bounded schedules, the same at every scale (they are what the table measures, listed with it)
SCALE_OVERRIDES = {
    "tencentgr": [
        "seqrec.epochs=0",  # the slice: min_steps steps of batch_size windows, not an epoch of all users
        "seqrec.min_steps=100",
        "seqrec.eval_every=50",
        "seqrec.progress=false",
    ],
    "mmctr": ["rank.epochs=1", "rank.progress=false"],
}


def sizes(track: str, scale: float) -> list[str]:
    return [f"{k}={max(int(round(v * scale)), 1)}" for k, v in FULL[track].items()] + FIXED[track]


def order(track: str, overrides: list[str]) -> tuple[list[str], dict[str, set[str]]]:
    """Stages in run order and each one's transitive upstream stages."""
    cfg = load_config(CONFIGS[track], overrides)
    stages = stages_for(cfg)
    direct = {n: set(needs_of(cfg, s)) for n, s in stages.items()}
    up: dict[str, set[str]] = {}
    for n in stages:  # run order: every need is resolved before
        up[n] = set().union(*[{m} | up.get(m, set()) for m in direct[n]]) if direct[n] else set()
    return list(stages), up


def parse_time(text: str) -> tuple[float | None, float | None]:
    """(wall seconds, peak RSS GiB) from /usr/bin/time -v's report."""
    wall = rss = None
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        wall = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        rss = int(m.group(1)) / 2**20
    return wall, rss


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def watch(proc: subprocess.Popen, min_gib: float) -> float | None:
    """Wait for the stage; stop it (SIGTERM to `timeout`, which passes it on) when the machine's available
    memory falls under min_gib, before the kernel's OOM killer picks a process of someone else's. Returns the
    available GiB it was stopped at, or None."""
    while proc.poll() is None:
        time.sleep(1.0)
        avail = available_gib()
        if min_gib > 0 and avail < min_gib:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            for pid in kids.read_text().split() if kids.is_file() else []:
                os.kill(int(pid), 15)
            proc.wait()
            return avail
    return None


def last_progress(log: Path) -> str:
    """The last non-empty line of a stage's log (tqdm bars and log lines end in \\r or \\n)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [ln.strip() for ln in re.split(r"[\r\n]", text.split("\tCommand being timed")[0]) if ln.strip()]
    return lines[-1][:200] if lines else ""


def run_track(a) -> None:
    tag = f"{a.track}_{a.scale:g}"
    base = Path(a.root) / tag
    overrides = [f"input_root={base / 'input'}", f"output_root={base / 'outputs'}", *sizes(a.track, a.scale),
                 *SCALE_OVERRIDES[a.track], *a.overrides]  # fmt: skip
    names, up = order(a.track, overrides)
    wanted = a.stages.split(",") if a.stages else names
    py = os.environ.get("BENCH_PY", sys.executable)
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    (Path(a.root) / "logs").mkdir(parents=True, exist_ok=True)
    print(f"{tag}: {' '.join(overrides)}", flush=True)
    failed: set[str] = set()
    for name in names:
        if name not in wanted:
            continue
        row = {"track": a.track, "scale": a.scale, "stage": name, "date": time.strftime("%Y-%m-%d %H:%M"),
               "extra": " ".join(a.overrides)}  # fmt: skip
        blocked = sorted(up[name] & failed)
        if blocked:
            failed.add(name)
            row |= {"status": f"not run: needs {', '.join(blocked)}"}
        else:
            log = Path(a.root) / "logs" / f"{tag}_{name}.log"
            cmd = ["/usr/bin/time", "-v", "timeout", str(a.timeout), py, "-m", "recstack", name,
                   "--config", str(CONFIGS[a.track]), *overrides]  # fmt: skip
            with log.open("w") as f:
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                low = watch(proc, a.min_available_gib)
                rc = proc.returncode
            wall, rss = parse_time(log.read_text(errors="replace"))
            status = "ok" if rc == 0 else ("timed out" if rc == 124 else f"failed (exit {rc})")
            if low is not None:
                status = f"stopped: the machine's available memory fell to {low:.1f} GiB"
            if rc != 0:
                failed.add(name)
            row |= {"status": status, "wall_s": wall, "peak_rss_gib": rss, "log": str(log),
                    "last_line": last_progress(log) if rc else ""}  # fmt: skip
        with (Path(a.root) / "scale_results.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    print_table(Path(a.root), a.track)


def print_table(root: Path, track: str | None = None) -> None:
    path = root / "scale_results.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []
    latest: dict[tuple, dict] = {}
    for r in rows:  # the last run of each (track, scale, stage)
        if track is None or r["track"] == track:
            latest[(r["track"], r["scale"], r["stage"])] = r
    print(
        "\n| track | scale | stage | wall s | peak RSS GiB | status | extra overrides |\n"
        "|---|---:|---|---:|---:|---|---|"
    )
    for (t, s, name), r in latest.items():
        wall = f"{r['wall_s']:,.0f}" if r.get("wall_s") is not None else "-"
        rss = f"{r['peak_rss_gib']:.2f}" if r.get("peak_rss_gib") is not None else "-"
        note = r["status"] + (f": {r['last_line']}" if r.get("last_line") else "")
        print(f"| {t} | {s:g} | {name} | {wall} | {rss} | {note} | {r.get('extra', '')} |")
    for t in sorted({k[0] for k in latest}):
        print(f"{t} sizes at scale 1: {FULL[t]}; fixed: {FIXED[t] + SCALE_OVERRIDES[t]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--track", choices=sorted(CONFIGS))
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--root", default="/tmp/bench")
    p.add_argument("--stages", default="", help="comma-separated subset (default: every stage of the track)")
    p.add_argument("--timeout", type=int, default=1500, help="seconds per stage before it is stopped")
    p.add_argument("--min-available-gib", type=float, default=2.0,
                   help="stop a stage when the machine's MemAvailable falls under this (0: never)")  # fmt: skip
    p.add_argument("--table", action="store_true", help="print the recorded results and exit")
    p.add_argument("overrides", nargs="*", help="more config overrides (key=value)")
    a = p.parse_args()
    if a.table or not a.track:
        return print_table(Path(a.root), a.track)
    run_track(a)


if __name__ == "__main__":
    sys.exit(main())
