"""The stage cache key covers the code a stage runs: editing a model file reruns its stage."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from recstack.errors import DataError
from recstack.paths import LOCK, Paths
from recstack.pipeline import module_closure, run_stage, run_until
from recstack.tracks import TRACKS

from conftest import ROOT, SMALL_SYNTH


def test_closure_follows_imports_into_models():
    files = {
        p.relative_to(ROOT / "src" / "recstack").as_posix() for p in module_closure("recstack.stages.rank")
    }
    assert {"models/din.py", "models/qin.py", "models/item_encoder.py", "train/trainer.py"} <= files
    assert "stages/embed.py" not in files  # another stage's code is not this stage's
    assert not any(f.startswith("report/") for f in files)  # a plot's style change retrains nothing
    stage = TRACKS["mmctr"].stages["baseline"]
    assert any(p.name == "priors.py" for p in module_closure(stage.run.__module__))


def test_editing_a_model_file_reruns_its_stage(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "src" / "recstack", pkg / "recstack", ignore=shutil.ignore_patterns("__pycache__"))
    args = [f"input_root={tmp_path / 'in'}", f"output_root={tmp_path / 'out'}", *SMALL_SYNTH]
    cmd = [
        sys.executable,
        "-m",
        "recstack",
        "baseline",
        "--config",
        str(ROOT / "configs/mmctr_synthetic.yaml"),
        *args,
    ]

    def run() -> str:
        env = {"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout + out.stderr

    assert "[baseline] running" in run()
    assert "[baseline] skipped" in run()  # nothing changed
    model = Path(pkg / "recstack" / "models" / "priors.py")
    model.write_text(model.read_text() + "\n# an edit\n")
    log = run()
    assert "[baseline] running" in log and "[prepare] skipped" in log  # only the stage whose code changed


@pytest.fixture
def synth(tmp_cfg):
    return tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH)


def test_downstream_keys_follow_content_not_keys(synth, caplog):
    caplog.set_level("INFO")
    run_until(synth, "baseline")
    # touch: the raw input looks changed (mtime), prepare reruns, writes the same content: baseline skipped
    raw = Paths(synth).raw_mmctr.split("train")
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    caplog.clear()
    run_until(synth, "baseline")
    assert "[prepare] running" in caplog.text and "[baseline] skipped" in caplog.text
    # a forced prepare whose output differs (same key): baseline must rerun, not keep stale figures
    stage = TRACKS["mmctr"].stages["prepare"]

    def changed(ctx):
        figures = stage.run(ctx)
        (ctx.out / "extra.txt").write_text("new content")
        return figures

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(TRACKS["mmctr"].stages, "prepare", replace(stage, run=changed))
        mp.setattr("recstack.pipeline._code_fingerprint", lambda s: "same code")
        first = run_stage(synth, "baseline")
        run_stage(synth, "prepare", force=True)
        caplog.clear()
        second = run_stage(synth, "baseline")
    assert "[baseline] running" in caplog.text and second["key"] != first["key"]


def test_killed_run_leftovers_are_removed_and_a_second_run_is_refused(synth, caplog):
    caplog.set_level("INFO")
    run_until(synth, "prepare")
    paths = Paths(synth)
    left = paths.run_dir / ".baseline.tmp-deadbeef"
    left.mkdir()
    (left / "predictions.parquet").write_text("half")
    run_stage(synth, "baseline")
    assert not left.exists() and "left by an interrupted run" in caplog.text
    with open(paths.run_dir / LOCK, "a+") as f:  # another process holds the folder
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DataError, match="in use by another recstack run"):
            run_stage(synth, "baseline", force=True)
        fcntl.flock(f, fcntl.LOCK_UN)
    run_stage(synth, "baseline", force=True)  # free again
