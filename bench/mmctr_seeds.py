"""Valid and local test AUC of every mmctr ranker, the stacker and the submission, over seeds.

    .venv/bin/python bench/mmctr_seeds.py --config configs/mmctr_movielens.yaml --seeds 2025 2026 2027 \
        [--set key=value ...] [--output-root outputs/bench_mmctr_seeds] [--pythonpath OTHER_CHECKOUT/src]

Runs the whole mmctr pipeline once per seed (`python -m recstack all --config ... seed=S`, each seed in its
own output root), then reads each run's manifests: every model stage's valid AUC (what the pipeline chooses
on) and its local test AUC (scored by the pipeline from the builder's hidden labels, never chosen on), mean
+- sd over the seeds, and the stacker's LightGBM gain per level-1 source (the share of the total gain taken
by the features of each rank_* / baseline source): a new ranker the stacker ignores shows a share near 0.
`--pythonpath` runs another checkout's source (e.g. the code before a change, in a `git worktree`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from recstack.config import load_config
from recstack.models import rankers  # noqa: F401  (registers every ranker's rank.<name> block)
from recstack.paths import MANIFEST, Paths


def run(config: str, seed: int, root: Path, overrides: list[str], pythonpath: str | None) -> None:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "-m", "recstack", "all", "--config", config, f"seed={seed}", f"output_root={root}",
           *overrides]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # logs/


def figures(paths: Paths) -> tuple[dict[str, tuple[float, float | None]], dict[str, float]]:
    """({stage: (valid AUC, test AUC)}, {source: share of the stacker's gain}) of one finished run."""
    out: dict[str, tuple[float, float | None]] = {}
    for folder in sorted(paths.run_dir.iterdir()):
        path = folder / MANIFEST
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        if "valid_auc" in m["figures"]:
            name = folder.name + (f" ({m['figures']['submitted']})" if folder.name == "ensemble" else "")
            out[name] = (m["figures"]["valid_auc"], (m.get("test") or {}).get("test_auc"))
    shares: dict[str, float] = {}
    stack = paths.stage_dir("stack") / MANIFEST
    if stack.is_file():
        gain = json.loads(stack.read_text())["figures"].get("gain") or {}
        total = sum(gain.values()) or 1.0
        for feature, g in gain.items():
            source = next((s for s in ("baseline", "rank_") if feature.startswith(f"p_{s}")), None)
            if source:
                name = feature[2:].split("_minus")[0].split("_user_rank")[0]
                shares[name] = shares.get(name, 0.0) + g / total
    return out, shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/mmctr_movielens.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2025, 2026, 2027])
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--output-root", default="outputs/bench_mmctr_seeds")
    ap.add_argument("--pythonpath", default=None, help="run the pipeline from this source folder")
    ap.add_argument("--no-run", action="store_true", help="read finished runs only")
    args = ap.parse_args()
    per: dict[str, list[tuple]] = {}
    share: dict[str, list[float]] = {}
    for seed in args.seeds:
        root = Path(args.output_root) / f"seed_{seed}"
        if not args.no_run:
            run(args.config, seed, root, args.overrides, args.pythonpath)
        cfg = load_config(args.config, [*args.overrides, f"seed={seed}", f"output_root={root}"])
        stages, shares = figures(Paths(cfg))
        for name, v in stages.items():
            per.setdefault(name.split(" (")[0] if name.startswith("ensemble") else name, []).append(
                (name, *v)
            )
        for name, v in shares.items():
            share.setdefault(name, []).append(v)

    def ms(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{np.mean(xs):.4f} +- {np.std(xs, ddof=1):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

    print(f"\n{args.config} {' '.join(args.overrides)}: {len(args.seeds)} seeds {args.seeds}")
    print(f"{'stage':<22} {'valid AUC':>18} {'test AUC':>18}")
    for name, vs in per.items():
        print(f"{name:<22} {ms([v[1] for v in vs]):>18} {ms([v[2] for v in vs]):>18}")
        if name == "ensemble":
            print(f"  submitted per seed: {', '.join(v[0].split('(')[1].rstrip(')') for v in vs)}")
    if share:
        print("stacker gain share per level-1 source: "
              + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in sorted(share.items(), key=lambda kv: -np.mean(kv[1]))))  # fmt: skip


if __name__ == "__main__":
    main()
