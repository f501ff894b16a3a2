"""The TRACKS registry drives the pipeline and the CLI: a track's module is the one place that lists its
stages, their optional inputs and its evaluation; a track registered here (no other file touched) gets its
stages run, its optional inputs keyed, its submissions scored by `./run.sh evaluate`, an unknown one is a
clear error; and the two TencentGR layouts' readers share no copied block (one assembly)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import DictConfig

from recstack import cli
from recstack.pipeline import pipeline_of, run_until
from recstack.tracks import TRACKS, Stage, Track, track_of
from recstack.tracks.base import SHARED_KEYS, present

from conftest import ROOT

SRC = ROOT / "src" / "recstack"


def _toy_make(ctx) -> dict:
    (ctx.out / "rows.txt").write_text("1\n2\n3\n")
    return {"rows": 3}


def _toy_score(ctx) -> dict:
    rows = (ctx.input_dir("make") / "rows.txt").read_text().split()
    (ctx.out / "submission.txt").write_text(str(sum(map(int, rows))))
    return {"valid_score": 0.5, "submission": "submission.txt"}


def _toy_extra(ctx) -> dict:
    (ctx.out / "extra.txt").write_text("x")
    return {}


class Toy(Track):
    """A third track in a few lines: two stages, an optional input, an evaluation."""

    name = "toy"

    def __init__(self) -> None:
        self.stages = {
            "make": Stage("make", _toy_make, (), SHARED_KEYS, "toy rows"),
            "extra": Stage("extra", _toy_extra, (), SHARED_KEYS, "an input the scorer reads when present"),
            "score": Stage(
                "score", _toy_score, ("make",), SHARED_KEYS, "sum of the rows", reads=present("extra")
            ),
        }

    def evaluate(self, cfg: DictConfig, submission: str) -> dict[str, float]:
        return {"test_total": float(Path(submission).read_text()), "rows": 1.0}

    def test_metric(self, cfg: DictConfig, folder: Path) -> float | None:
        return 1.0


@pytest.fixture
def toy(monkeypatch) -> Track:
    track = Toy()
    monkeypatch.setitem(TRACKS, "toy", track)
    return track


def test_each_track_module_lists_the_pipeline():
    for name, track in TRACKS.items():
        got, own = pipeline_of(name), track.pipeline()
        assert track.name == name and list(got) == list(own)
        assert all(got[s].needs == own[s].needs and got[s].config_keys == own[s].config_keys for s in got)
        assert list(track.stages) == [s for s in pipeline_of(name) if s in track.stages]  # same order
    ranks = [s for s in pipeline_of("mmctr") if s.startswith("rank_")]
    assert ranks and "rank_din" in ranks and not any(s.startswith("rank_") for s in pipeline_of("tencentgr"))
    assert "seqrec" in pipeline_of("tencentgr") and "seqrec" not in pipeline_of("mmctr")


def test_a_registered_track_gets_its_stages_run_keyed_and_evaluated(toy, tmp_cfg, capsys):
    cfg = tmp_cfg(None, "track=toy", "dataset=toyset")
    manifests = run_until(cfg)
    assert list(manifests) == ["make", "extra", "score"]  # the track's order, nothing of mmctr's
    assert set(manifests["score"]["inputs"]) == {"make", "extra"}  # the optional input is in its key
    out = Path(cfg.output_root) / "toy" / "toyset" / "defaults"  # no config file: the run folder "defaults"
    assert (out / "score" / "submission.txt").read_text() == "6"
    # the leaderboard asks the track for the test figure
    assert "score" in (out / "leaderboard.csv").read_text()
    # without the optional stage the scorer still runs, and its key no longer names it
    toy.stages.pop("extra")
    assert set(run_until(cfg, "score")["score"]["inputs"]) == {"make"}
    # ./run.sh evaluate: the CLI dispatches to the track's own evaluation
    argv = ["evaluate", str(out / "score" / "submission.txt"), *(f"{k}={v}" for k, v in
            (("track", "toy"), ("dataset", "toyset"), ("input_root", cfg.input_root),
             ("output_root", cfg.output_root)))]  # fmt: skip
    assert cli.main(argv) == 0
    assert "test_total: 6.000000" in capsys.readouterr().out
    assert "track toy:" in cli._stage_help() and "sum of the rows" in cli._stage_help()


def test_an_unknown_track_is_an_error_naming_the_known_ones(tmp_cfg, capsys):
    with pytest.raises(Exception, match="'track' is 'nope'; expected one of mmctr, tencentgr"):
        track_of("nope")
    assert cli.main(["leaderboard", "track=nope"]) == 2
    assert "expected one of mmctr, tencentgr" in capsys.readouterr().err


def _compares_to_a_track_name(path: Path) -> list[int]:
    """Lines of `path` that compare something with a track's name (`cfg.track == "mmctr"` and the like)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            names = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
            if any(n in TRACKS for n in names):
                lines.append(node.lineno)
    return lines


def test_no_track_branching_outside_the_track_modules():
    for path in [
        SRC / "cli.py",
        SRC / "pipeline.py",
        SRC / "leaderboard.py",
        *sorted((SRC / "stages").glob("*.py")),
    ]:
        assert _compares_to_a_track_name(path) == [], path


def shared_runs(a: str, b: str, run: int = 6) -> list[tuple[str, ...]]:
    """Runs of `run` consecutive identical code lines (stripped; blank, comment, import and bracket-only
    lines dropped) found in both sources: the copy-paste the TencentGR readers had before one assembly."""

    def lines(src: str) -> list[str]:
        imports = {n for node in ast.walk(ast.parse(src)) if isinstance(node, ast.Import | ast.ImportFrom)
                   for n in range(node.lineno, node.end_lineno + 1)}  # fmt: skip
        keep = (x.strip() for i, x in enumerate(src.splitlines(), 1) if i not in imports)
        return [x for x in keep if x and not x.startswith("#") and x.strip("()[]{}:,") != ""]

    la, lb = lines(a), lines(b)
    windows = {tuple(lb[i : i + run]) for i in range(len(lb) - run + 1)}
    return [w for i in range(len(la) - run + 1) if (w := tuple(la[i : i + run])) in windows]


def test_shared_runs_finds_a_copied_block():
    lines = [f"x{i} = f(y, {i})" for i in range(6)]
    top, nested = "\n".join(lines), "def b():\n" + "\n".join("    " + x for x in lines)
    assert shared_runs(top, nested)  # the same block at another indentation: found
    assert not shared_runs(top, nested.replace("x3", "z3"))  # one line differs: no run of 6


def test_the_raw_readers_share_no_copied_block():
    files = sorted((SRC / "data" / "raw").glob("*.py"))
    assert len(files) >= 3
    for i, a in enumerate(files):
        for b in files[i + 1 :]:
            assert shared_runs(a.read_text(), b.read_text()) == [], (a.name, b.name)
