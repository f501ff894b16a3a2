"""Time and peak RSS of `prepare` at growing sizes (synthetic data), one fresh process per measurement.

    .venv/bin/python bench/bench_prepare.py                    # mmctr at 100k, 1M, 3.6M train rows
    .venv/bin/python bench/bench_prepare.py --rows 100000      # a single size

The raw data is built first (not timed here, figures printed separately); then `./run.sh prepare --force`
runs in a child process whose wall time and peak RSS (getrusage of that child) are reported. Target:
linear growth; peak RSS at 3.6M rows (MicroLens-1M train size) under 8 GiB.
"""

from __future__ import annotations

import argparse
import os
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
    args = ap.parse_args()
    print(f"{'track':<8} {'train rows':>11} {'build s':>8} {'build GiB':>9} {'prepare s':>9} "
          f"{'prepare GiB':>11} {'us/row':>7}")  # fmt: skip
    for rows in args.rows:
        r = mmctr(rows, args.workdir)
        print(f"{'mmctr':<8} {r['train_rows']:>11,} {r['build_s']:>8.1f} {r['build_gib']:>9.2f} "
              f"{r['prepare_s']:>9.1f} {r['prepare_gib']:>11.2f} {1e6 * r['prepare_s'] / r['train_rows']:>7.2f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
