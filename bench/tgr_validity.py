"""Does the tencentgr local validation predict the local test? Valid and test of every candidate, over seeds.

    .venv/bin/python bench/tgr_validity.py --config configs/tencentgr_movielens.yaml --seeds 2025 2026 2027 \
        [--set key=value ...] [--output-root outputs/bench_validity] [--pythonpath OTHER_CHECKOUT/src] \
        [--builder-seeds 1 2 3 ...]

Runs the whole tencentgr pipeline once per seed (`python -m recstack all --config ... seed=S`, each seed in its
own output root so the runs never share a stage folder), then reads each run's folders and prints, per
candidate (every retrieve source, the fused ranking, seqrec, the popularity baseline, the reranker, the blend
and the submission): valid and local test, mean +- sd over the seeds, and for the submission the standard
error of its test score (the per-user gains' sd / sqrt(users), mean over the seeds) and |valid - test| / SE.

The test figures are scored here from the answers the dataset builder kept (input/<dataset>/local_truth/),
after the runs, by the scoring code of this checkout; `--pythonpath` runs the pipeline from another
checkout's source (e.g. the code before a change, in a `git worktree`), so both protocols are scored alike.
The valid figures are the runs' own. Nothing here feeds back into a run.

`--builder-seeds` also redraws the data set: for each builder seed (data.movielens.seed or
data.synthetic_tgr.seed) the builder writes its own input root, so the predict users, their hidden clicks and
the valid users are a fresh draw. One predict set of ~190 users is itself a sample: a validation that is right
on average can still miss one draw by more than a standard error. Over builder seeds, the mean of
(valid - test) and its standard error (sd over the draws / sqrt(draws)) say whether the validation is biased.
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
from recstack.paths import MANIFEST, Paths
from recstack.tracks.tencentgr import TENCENTGR


def run(config: str, seed: int, root: Path, overrides: list[str], pythonpath: str | None) -> None:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "-m", "recstack", "all", "--config", config, f"seed={seed}", f"output_root={root}",
           *overrides]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # logs/


def figures(cfg) -> dict[str, tuple[float | None, float | None, float | None]]:
    """{candidate: (valid, test, test SE)} of one finished run: the valid figures from its manifests, the test
    ones scored again by this checkout's Track.test_figures (the pipeline's own scoring; older checkouts'
    manifests hold none)."""
    paths = Paths(cfg)
    out: dict[str, tuple[float | None, float | None, float | None]] = {}
    for stage in ("baseline", "seqrec", "stack", "retrieve", "ensemble"):
        path = paths.stage_dir(stage) / MANIFEST
        if not path.is_file():
            continue
        f = json.loads(path.read_text())["figures"]
        t = TENCENTGR.test_figures(cfg, paths.stage_dir(stage), f)
        own = (f.get("valid_score"), t.get("test_score"), t.get("test_score_se"))
        if stage == "retrieve":
            for key in t:
                if key.startswith("test_score_") and key != "test_score_se":
                    name = key[len("test_score_") :]
                    out[f"retrieve:{name}"] = (f.get(f"valid_score_{name}"), t[key], None)
        elif stage == "ensemble":
            if "test_score_blend" in t:  # every candidate's ranking (not written by older checkouts)
                out["ensemble:blend"] = (f.get("valid_score_blend"), t["test_score_blend"], None)
            out[f"submitted ({f.get('submitted')})"] = own
        else:
            out[stage] = own
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/tencentgr_movielens.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2025, 2026, 2027])
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--output-root", default="outputs/bench_validity")
    ap.add_argument("--pythonpath", default=None, help="run the pipeline from this source folder")
    ap.add_argument("--no-run", action="store_true", help="read finished runs only")
    ap.add_argument("--builder-seeds", type=int, nargs="*", default=None,
                    help="redraw the data set with each of these builder seeds (its own input root)")  # fmt: skip
    args = ap.parse_args()
    per: dict[str, list[tuple]] = {}
    submitted: list[tuple] = []
    draws: list[tuple[int, float, float, float]] = []  # builder seed, mean valid, mean test, mean SE
    source = load_config(args.config, args.overrides).data.source
    key_of = {"movielens": "data.movielens.seed", "synthetic": "data.synthetic_tgr.seed"}
    if args.builder_seeds and source not in key_of:
        sys.exit(f"--builder-seeds: data.source is {source!r}; only a built data set can be redrawn")
    for bseed in args.builder_seeds or [None]:
        base = Path(args.output_root)
        data = [] if bseed is None else [f"{key_of[source]}={bseed}", f"input_root={base / f'data_{bseed}'}"]
        mine = []
        for seed in args.seeds:
            root = base / (f"seed_{seed}" if bseed is None else f"data_{bseed}_seed_{seed}")
            overrides = [*args.overrides, *data]
            if not args.no_run:
                run(args.config, seed, root, overrides, args.pythonpath)
            cfg = load_config(args.config, [*overrides, f"seed={seed}", f"output_root={root}"])
            for name, v in figures(cfg).items():
                key = "submitted" if name.startswith("submitted") else name
                per.setdefault(key, []).append(v)
                if key == "submitted":
                    submitted.append((name, *v))
                    mine.append(v)
        if bseed is not None and mine:
            draws.append((bseed, *(float(np.mean([m[i] for m in mine])) for i in range(3))))

    def ms(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{np.mean(xs):.4f} +- {np.std(xs, ddof=1):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

    print(f"\n{args.config} {' '.join(args.overrides)}: {len(args.seeds)} seeds {args.seeds}")
    print(f"{'candidate':<22} {'valid':>18} {'test':>18}")
    for name, vs in per.items():
        print(f"{name:<22} {ms([v[0] for v in vs]):>18} {ms([v[1] for v in vs]):>18}")
    if submitted:
        se = float(np.mean([s[3] for s in submitted]))
        gap = float(np.mean([s[1] for s in submitted]) - np.mean([s[2] for s in submitted]))
        print(f"submitted per seed: {', '.join(f'{s[0]} {s[1]:.4f}/{s[2]:.4f}' for s in submitted)}")
        print(f"submission: valid - test = {gap:+.4f}, test SE {se:.4f} ({abs(gap) / se:.2f} SE)")
        cov = per.get("retrieve:covisit")
        if cov:
            ratio = np.mean([s[2] for s in submitted]) / np.mean([c[1] for c in cov])
            print(f"submission test / covisit test = {ratio:.3f}")
    if draws:
        print("\nper builder seed (mean over the pipeline seeds): valid / test, gap in that draw's test SE")
        for b, v, t, se in draws:
            print(f"  data seed {b}: {v:.4f} / {t:.4f}  {v - t:+.4f} ({(v - t) / se:+.2f} SE)")
        gaps = np.array([v - t for _, v, t, _ in draws])
        if len(gaps) > 1:
            sem = gaps.std(ddof=1) / np.sqrt(len(gaps))
            print(
                f"over {len(gaps)} draws: mean valid - test = {gaps.mean():+.4f} +- {sem:.4f} (SE of the mean), "
                f"{gaps.mean() / sem:+.2f} SE; mean per-draw test SE {np.mean([d[3] for d in draws]):.4f}"
            )


if __name__ == "__main__":
    main()
