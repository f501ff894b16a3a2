"""The stage cache key covers the code a stage runs: editing a model file reruns its stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from recstack.pipeline import PIPELINES, module_closure

from conftest import ROOT, SMALL_SYNTH


def test_closure_follows_imports_into_models():
    files = {
        p.relative_to(ROOT / "src" / "recstack").as_posix() for p in module_closure("recstack.stages.rank")
    }
    assert {"models/din.py", "models/qin.py", "models/item_encoder.py", "train/trainer.py"} <= files
    assert "stages/embed.py" not in files  # another stage's code is not this stage's
    assert not any(f.startswith("report/") for f in files)  # a plot's style change retrains nothing
    stage = PIPELINES["mmctr"]["baseline"]
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
