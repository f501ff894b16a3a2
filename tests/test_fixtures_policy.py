"""Tests that need ../shared/fixtures fail in CI instead of skipping; the synthetic builder finds the
fixtures relative to the repository whatever the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recstack.paths import REPO_ROOT, Paths, from_repo

from conftest import ROOT

TEST = "tests/test_tencentgr_platform.py::test_real_indexer_loads_through_the_restricted_unpickler"


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env |= {"RECSTACK_FIXTURES": str(tmp_path / "no-fixtures-here"), "PYTHONPATH": str(ROOT / "src")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", TEST],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_fixtures_fail_in_ci(tmp_path, ci):
    r = _pytest(tmp_path, ci)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "real fixtures not found at" in r.stdout and "CI=true: tests that need them fail" in r.stdout
    assert "ERROR at setup of test_real_indexer" in r.stdout  # reported as an error, never a skip
    assert "SKIPPED" not in r.stdout


def test_missing_fixtures_skip_with_the_reason_outside_ci(tmp_path):
    r = _pytest(tmp_path, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SKIPPED" in r.stdout and "real fixtures not found at" in r.stdout


def test_fixtures_dir_is_relative_to_the_repository(tmp_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # another working directory
    assert REPO_ROOT == ROOT
    got = Paths(tmp_cfg("mmctr_synthetic.yaml")).synthetic_fixtures
    assert got == (ROOT / "../shared/fixtures/microlens_100k").resolve()
    absolute = tmp_path / "elsewhere"
    cfg = tmp_cfg("mmctr_synthetic.yaml", f"data.synthetic.fixtures_dir={absolute}")
    assert Paths(cfg).synthetic_fixtures == absolute
    assert from_repo("configs") == ROOT / "configs"
