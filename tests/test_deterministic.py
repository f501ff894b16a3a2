"""`deterministic=true`: torch's deterministic algorithms, cuDNN without autotuning and one CPU thread while a
stage runs, restored afterwards; part of the cache key of every stage that can run torch (it can change a
trained model's bytes)."""

import os
import re

import torch

from recstack.config import subset
from recstack.device import deterministic_mode
from recstack.pipeline import module_closure, pipeline_of


def test_the_switch_sets_and_restores_torch_state():
    sdp = torch.backends.cuda
    torch.set_num_threads(2)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_num_threads(),
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        (sdp.flash_sdp_enabled(), sdp.mem_efficient_sdp_enabled(), sdp.cudnn_sdp_enabled()),
    )
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 1
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        # the fused attention kernels' backward is not deterministic under warn_only: math backend only
        assert not (sdp.flash_sdp_enabled() or sdp.mem_efficient_sdp_enabled() or sdp.cudnn_sdp_enabled())
        assert sdp.math_sdp_enabled()
    after = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_num_threads(),
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        (sdp.flash_sdp_enabled(), sdp.mem_efficient_sdp_enabled(), sdp.cudnn_sdp_enabled()),
    )
    assert after == before
    with deterministic_mode(False):
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()


def test_the_switch_is_in_every_stage_key_that_can_run_torch(tmp_cfg):
    """build and prepare import no torch (their whole module closure, as the code key reads it), so the switch
    cannot change their bytes and is not in their key: flipping it leaves the data and prepare alone."""
    on, off = tmp_cfg("tencentgr_synthetic.yaml", "deterministic=true"), tmp_cfg("tencentgr_synthetic.yaml")
    torch_import = re.compile(r"^\s*(import torch|from torch)", re.M)
    for track in ("mmctr", "tencentgr"):
        for stage in pipeline_of(track).values():
            keyed = subset(on, stage.config_keys) != subset(off, stage.config_keys)
            if stage.name in ("build", "prepare"):
                assert not keyed, stage.name
                sources = [p.read_text() for p in module_closure(stage.run.__module__)]
                assert sources and not any(torch_import.search(src) for src in sources), stage.name
            else:
                assert keyed, stage.name


def test_a_stage_runs_under_the_switch(tmp_cfg, monkeypatch):
    """The runner wraps the stage body: inside it the torch state is the deterministic one."""
    from recstack import pipeline
    from recstack.tracks import TRACKS

    seen = {}

    def body(ctx):
        seen["det"], seen["threads"] = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
        return {}

    import dataclasses

    stages = dict(TRACKS["tencentgr"].stages)
    stages["build"] = dataclasses.replace(stages["build"], run=body)
    monkeypatch.setattr(TRACKS["tencentgr"], "stages", stages)
    cfg = tmp_cfg("tencentgr_synthetic.yaml", "deterministic=true")
    pipeline.run_stage(cfg, "build", force=True)
    assert seen == {"det": True, "threads": 1}
    assert not torch.are_deterministic_algorithms_enabled()
