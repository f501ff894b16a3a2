"""The rank stage under torchrun: 2 CPU processes (gloo, DDP) reach the single-process valid AUC."""

import json
import os
import subprocess
import sys

from recstack.paths import MANIFEST, Paths
from recstack.pipeline import run_until

from conftest import ROOT, SMALL_SYNTH

RANK = (
    "rank.multimodal=provided",
    "rank.epochs=3",
    "rank.progress=false",
    "rank.din.emb_dim=8",
    "rank.din.attention_units=[16]",
    "rank.din.dnn_units=[16]",
    "rank.din.batch_size=128",
    "rank.din.micro_batch=48",  # each rank's 64 rows in 2 passes: gradients sync once (DDP no_sync) per step
)


def test_two_cpu_processes_match_one_process(tmp_cfg, tmp_path):
    overrides = (*SMALL_SYNTH, "data.synthetic.users=600", *RANK)  # enough rows to learn: AUC ~0.7
    cfg = tmp_cfg("mmctr_synthetic.yaml", *overrides)
    one = run_until(cfg, "rank_din")["rank_din"]["figures"]
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "recstack", "rank_din", "--force", "--config", str(ROOT / "configs" / "mmctr_synthetic.yaml"),
        f"input_root={tmp_path / 'input'}", f"output_root={tmp_path / 'outputs'}", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((Paths(cfg).stage_dir("rank_din") / MANIFEST).read_text())["figures"]
    assert two["processes"] == 2 and one["processes"] == 1
    assert one["valid_auc"] > 0.55  # it learned something, so equal AUCs mean equal training
    assert abs(two["valid_auc"] - one["valid_auc"]) < 0.002, (one, two)
    assert "distributed: rank 1 of 2 (gloo)" in proc.stderr
