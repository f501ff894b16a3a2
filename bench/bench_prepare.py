"""Time and peak RSS of `prepare` at growing sizes (synthetic data), one fresh process per measurement.

    .venv/bin/python bench/bench_prepare.py                    # mmctr at 100k, 1M, 3.6M train rows
    .venv/bin/python bench/bench_prepare.py --rows 100000      # a single size
    .venv/bin/python bench/bench_prepare.py --track tencentgr  # tencentgr at 100k and 1M users
    .venv/bin/python bench/bench_prepare.py --track tencentgr --users 100000

tencentgr: the synthetic set (~90 item events per user, items = users / 2, candidate pool = users / 10,
predict users = users / 20, 13 item features, 32-d and 1024-d embeddings for 80% of the items) is built and
written in the platform layout by one child process (`build_and_write`: build and write timed apart, peak RSS
of the build and of the whole child); then `read_platform` runs in a fresh child (time, peak RSS). Target:
linear growth; read peak RSS at 1M users under 12 GiB. The set is deleted afterwards (`--keep` keeps it);
a 1M-user set takes ~20 GB of disk.

The raw data is built first (not timed here, figures printed separately); then `./run.sh prepare --force`
runs in a child process whose wall time and peak RSS (getrusage of that child) are reported. Target:
linear growth; peak RSS at 3.6M rows (MicroLens-1M train size) under 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES_PER_USER = 12  # 10 train rows per user + 1 valid + 1 test
MICROLENS_ITEMS = 91_717


def child(args: list[str]) -> tuple[float, float]:
    """Run `python -m recstack <args>`; return (seconds, peak RSS GiB) of that process alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "recstack", *args], cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"recstack {' '.join(args)} failed")
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def child_py(code: str, log: Path) -> tuple[float, float, str]:
    """Run `python -c code`; return (seconds, peak RSS GiB, stdout) of that process alone (stderr to `log`)."""
    t0 = time.perf_counter()
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed; see {log}:\n" + log.read_text()[-3000:])
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20, out


TGR_BYTES_PER_USER = 21_000  # seq.jsonl ~13 KB + embeddings of users / 2 items (1024-d JSON ~5.6 KB each)


def tencentgr(users: int, workdir: Path, keep: bool) -> dict[str, float]:
    root = workdir / f"bench_tencentgr_{users}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    need, free = users * TGR_BYTES_PER_USER * 1.2, shutil.disk_usage(root).free
    if need > free:
        raise SystemExit(
            f"{root}: {free / 2**30:.1f} GiB free, a {users:,}-user set needs ~{need / 2**30:.1f} GiB"
        )
    kw = {"users": users, "items": users // 2, "candidates": max(10, users // 10),
          "predict_users": max(1, users // 20), "seed": 7}  # fmt: skip
    log = root / "stderr.log"
    try:
        _, child_gib, out = child_py(
            "import json; from recstack.config import SyntheticTGRConfig as C; "
            "from recstack.data.builders.synthetic_tgr import build_and_write as b; "
            f"print(json.dumps(b(C(**{kw!r}), {str(root / 'raw')!r})))",
            log,
        )
        fig = json.loads(out.strip().splitlines()[-1])
        read_s, read_gib, _ = child_py(
            "from recstack.data.raw.tencentgr_platform import read_platform as r; "
            f"r({str(root / 'raw')!r}, __import__('pathlib').Path({str(root / 'prepared')!r}), True, ('81', '82'))",
            log,
        )
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return {**fig, "write_gib": child_gib, "read_s": read_s, "read_gib": read_gib}


def mmctr(rows: int, workdir: Path) -> dict[str, float]:
    users = max(1, rows // (SAMPLES_PER_USER - 2))
    common = [
        "--config", "configs/mmctr_synthetic.yaml",
        f"dataset=bench_mmctr_{rows}", f"input_root={workdir}/input", f"output_root={workdir}/outputs",
        f"data.synthetic.users={users}", f"data.synthetic.items={MICROLENS_ITEMS}",
        f"data.synthetic.samples_per_user={SAMPLES_PER_USER}", "data.synthetic.images=false",
    ]  # fmt: skip
    build_s, build_gb = child(["build", "--force", *common])
    prep_s, prep_gb = child(["prepare", "--force", *common])
    return {"train_rows": users * (SAMPLES_PER_USER - 2), "build_s": build_s, "build_gib": build_gb,
            "prepare_s": prep_s, "prepare_gib": prep_gb}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000, 3_600_000])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/recstack-bench"))
    ap.add_argument("--track", choices=["mmctr", "tencentgr", "all"], default="mmctr")
    ap.add_argument("--users", type=int, nargs="*", default=[100_000, 1_000_000], help="tencentgr sizes")
    ap.add_argument("--keep", action="store_true", help="keep the tencentgr sets written under --workdir")
    args = ap.parse_args()
    if args.track in ("tencentgr", "all"):
        print(f"{'track':<9} {'users':>9} {'events':>11} {'build s':>8} {'build GiB':>9} {'write s':>8} "
              f"{'write GiB':>9} {'read s':>8} {'read GiB':>8} {'us/event':>8}")  # fmt: skip
        for users in args.users:
            r = tencentgr(users, args.workdir, args.keep)
            events = r["events"] + r["predict_events"]
            print(f"{'tencentgr':<9} {users:>9,} {events:>11,} {r['build_s']:>8.1f} {r['build_gib']:>9.2f} "
                  f"{r['write_s']:>8.1f} {r['write_gib']:>9.2f} {r['read_s']:>8.1f} {r['read_gib']:>8.2f} "
                  f"{1e6 * r['read_s'] / events:>8.2f}", flush=True)  # fmt: skip
        if args.track == "tencentgr":
            return
    print(f"{'track':<8} {'train rows':>11} {'build s':>8} {'build GiB':>9} {'prepare s':>9} "
          f"{'prepare GiB':>11} {'us/row':>7}")  # fmt: skip
    for rows in args.rows:
        r = mmctr(rows, args.workdir)
        print(f"{'mmctr':<8} {r['train_rows']:>11,} {r['build_s']:>8.1f} {r['build_gib']:>9.2f} "
              f"{r['prepare_s']:>9.1f} {r['prepare_gib']:>11.2f} {1e6 * r['prepare_s'] / r['train_rows']:>7.2f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
