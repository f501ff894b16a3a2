"""The stage cache key covers the code a stage runs: editing a model file reruns its stage."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from recstack.errors import DataError
from recstack.paths import LOCK, Paths
from recstack.pipeline import module_closure, read_manifest, run_stage, run_until
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


def test_two_configs_on_one_dataset_keep_their_run_folders_and_share_equal_stages(tmp_cfg, caplog):
    """Run folders are per config (`run_name`, the config file's name by default): a second config on the
    same data writes its own config.yaml and stages; a stage whose key agrees is linked from the first run
    folder (hard links, not recomputed), one whose settings differ runs; a linked folder whose files changed
    since its manifest is not taken."""
    a = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH)
    b = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "run_name=other", "baseline.prior_strength=7")
    assert a.run_name == "mmctr_synthetic" and Paths(a).run_dir.name == "mmctr_synthetic"
    assert Paths(a).run_dir.parent == Paths(b).run_dir.parent  # one data set, two run folders
    run_until(a, "baseline")
    first_prepare = (Paths(a).stage_dir("prepare") / "manifest.json").read_text()
    with caplog.at_level(logging.INFO, logger="recstack"):
        run_until(b, "baseline")
    log = caplog.text
    assert "[prepare] linked from" in log and "[baseline] running" in log
    pa_, pb = Paths(a).stage_dir("prepare"), Paths(b).stage_dir("prepare")
    for f in sorted(p.relative_to(pa_) for p in pa_.rglob("*") if p.is_file()):
        assert (pa_ / f).stat().st_ino == (pb / f).stat().st_ino, f  # linked, not copied or recomputed
    assert (pa_ / "manifest.json").read_text() == first_prepare  # the first run folder is untouched
    ba, bb = (read_manifest(Paths(c).stage_dir("baseline")) for c in (a, b))
    assert ba["key"] != bb["key"] and ba["config"] != bb["config"]
    # a donor whose files no longer match its manifest is not linked: the stage runs here
    c = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "run_name=third")
    victim = next(p for p in sorted(pa_.rglob("*.parquet")))
    victim.unlink()
    victim.write_bytes(b"changed")  # a new file under the old name (the hard link in `other` keeps the old)
    shutil.rmtree(Paths(b).stage_dir("prepare"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="recstack"):
        run_until(c, "prepare")
    assert "[prepare] running" in caplog.text and "linked from" not in caplog.text
