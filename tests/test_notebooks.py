"""Notebooks run headless on tiny data: their code cells are executed in order in one namespace."""

import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, SMALL_SYNTH

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path) -> dict:
    ns: dict = {"__name__": "__main__"}
    for k, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {k} is committed with outputs"
            exec(compile("".join(cell["source"]), f"{path.name}[{k}]", "exec"), ns)  # noqa: S102
    return ns


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    base = [f"input_root={tmp_path}/in", f"output_root={tmp_path}/out"]
    if "mmctr" in path.name:
        config, extra = "mmctr_synthetic.yaml", [*SMALL_SYNTH, "data.synthetic.images=false"]
    else:
        from recstack.artifacts import sha256_file

        from test_movielens import fake_wheel

        cache = tmp_path / "in" / "_cache"
        cache.mkdir(parents=True)
        wheel = fake_wheel(cache / "recbole-1.2.1-py3-none-any.whl", users=30, items=60, per_user=12)
        config, extra = "tencentgr_movielens.yaml", [f"data.movielens.wheel_sha256={sha256_file(wheel)}"]
    monkeypatch.setenv("RECSTACK_NB_CONFIG", str(ROOT / "configs" / config))
    monkeypatch.setenv("RECSTACK_NB_ARGS", " ".join(base + extra))
    monkeypatch.chdir(ROOT / "notebooks")
    ns = run_notebook(path)
    assert "manifests" in ns and ns["manifests"]["baseline"]["figures"]
    assert os.environ["RECSTACK_NB_CONFIG"].endswith(config)
