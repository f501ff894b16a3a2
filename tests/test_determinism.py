"""The same config on the same machine gives byte-identical submissions (zip included), on both tracks."""

from __future__ import annotations

from recstack.config import load_config
from recstack.data.raw.tencentgr_platform import write_platform
from recstack.paths import Paths, Submission
from recstack.pipeline import run_until

from conftest import ROOT, SMALL_SYNTH, TINY_SEQREC
from tgr_helpers import tiny_tgr

TGR = ("data.mm_feats=['81','82']", "data.emb_dims={'82': 8}", "data.valid_users=2", "data.stack_users=2",
       "embed.dim=16", "embed.align.epochs=1", "ensemble.sources=[retrieve]", "retrieve.covisit.window=3")  # fmt: skip


def _twice(tmp_path, config: str, overrides: tuple[str, ...], files: list[str], tgr: bool = False) -> None:
    outs = []
    for run in ("a", "b"):
        cfg = load_config(ROOT / "configs" / config,
                          [f"input_root={tmp_path / run / 'in'}", f"output_root={tmp_path / run / 'out'}", *TINY_SEQREC, *overrides])  # fmt: skip
        if tgr:
            write_platform(tiny_tgr(), Paths(cfg).raw_dir, {"82": 8})
        run_until(cfg, "ensemble")
        outs.append([(Paths(cfg).stage_dir("ensemble") / f).read_bytes() for f in files])
    for name, a, b in zip(files, *outs, strict=True):
        assert a == b, f"{config}: {name} differs between two runs of the same config"


def test_mmctr_submission_is_byte_identical(tmp_path):
    files = [Submission.MMCTR_CSV, Submission.MMCTR_ZIP]
    _twice(
        tmp_path,
        "mmctr_synthetic.yaml",
        (*SMALL_SYNTH, "ensemble.sources=[baseline,rank_din]", "rank.epochs=1"),
        files,
    )


def test_tencentgr_submission_is_byte_identical(tmp_path):
    _twice(tmp_path, "tencentgr_real.yaml", TGR, [Submission.TGR_JSON, Submission.TGR_CSV], tgr=True)
