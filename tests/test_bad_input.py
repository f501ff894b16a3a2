"""Bad input through the CLI, as a new user meets it: `./run.sh prepare` on a broken raw folder of either track
and layout must exit non-zero with one line naming the file, the column or line / row and what was expected,
print no traceback, and leave no prepared folder (nothing half-written). README "Bad input" lists these."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack import cli
from recstack.data.raw.mmctr import write_mmctr_raw
from recstack.data.raw.tencentgr_parquet import write_parquet_layout
from recstack.data.raw.tencentgr_platform import write_platform
from recstack.paths import MMCTR_SUBDIR

from conftest import ROOT, tiny_raw
from tgr_helpers import tiny_tgr

CONFIG = {"mmctr": "mmctr_movielens.yaml", "tencentgr": "tencentgr_real.yaml"}


# ---- writers of the three layouts and edits that break them ------------------------------------------
def _bad_utf8(texts: list[str], row: int) -> pa.Array:
    """A string column whose row `row` holds Latin-1 bytes (what a wrongly re-encoded export gives)."""
    raw = [t.encode() for t in texts]
    raw[row] = "café à la crème".encode("latin-1")
    return pa.array(raw, pa.binary()).view(pa.string())


def _edit_table(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(edit(pq.read_table(path)), path)


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


def _set_row(table: pa.Table, name: str, row: int, value, type_=None) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] = value
    return _set(table, name, pa.array(values, type_ or table.column(name).type))


def _lines(path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    path.write_bytes(b"".join(edit(path.read_bytes().splitlines(keepends=True))))


def _indexer(root: Path, edit: Callable[[dict], None]) -> None:
    idx = pickle.loads((root / "indexer.pkl").read_bytes())
    edit(idx)
    (root / "indexer.pkl").write_bytes(pickle.dumps(idx))


def _item_text(root: Path, table: pa.Table | None = None) -> None:
    cids = tiny_tgr().creative_id[1:].tolist()
    table = table or pa.table(
        {"creative_id": pa.array(cids, pa.int64()), "text": [f"title {c}" for c in cids]}
    )
    pq.write_table(table, root / "item_text.parquet")


def _drop_items_from_indexer(idx: dict) -> None:  # an indexer covering 10 of the 20 items
    idx["i"] = {k: v for k, v in idx["i"].items() if v <= 10}


def _same_reid(idx: dict) -> None:
    first, second = list(idx["i"])[:2]
    idx["i"][second] = idx["i"][first]


def _predict_user_twice(lines: list[bytes]) -> list[bytes]:
    return [*lines, lines[0]]


def _train_user_beyond_indexer(lines: list[bytes]) -> list[bytes]:
    recs = orjson.loads(lines[2])
    for r in recs:
        r[0] = 99
    return [*lines[:2], orjson.dumps(recs) + b"\n", *lines[3:]]


M = MMCTR_SUBDIR
# (case id, track, layout, edit(root), expected message as a regex)
CASES = [
    # mmctr
    ("mmctr-title-not-utf8", "mmctr", "mmctr",
     lambda r: _edit_table(r / "item_feature.parquet", lambda t: _set(t, "item_title", _bad_utf8(t.column("item_title").to_pylist(), 3))),
     r"item_feature\.parquet: column 'item_title' row 3 is not valid UTF-8 text \(invalid continuation byte"),
    ("mmctr-negative-item-tags", "mmctr", "mmctr",
     lambda r: _edit_table(r / M / "item_info.parquet", lambda t: _set_row(t, "item_tags", 4, [0, 0, 0, 2, -3])),
     r"item_info\.parquet: column 'item_tags' row 4 is -3; expected tag ids >= 0"),
    ("mmctr-negative-likes-level-in-split", "mmctr", "mmctr",
     lambda r: _edit_table(r / M / "train.parquet", lambda t: _set_row(t, "likes_level", 7, -1)),
     r"train\.parquet: column 'likes_level' row 7 is -1; expected a level >= 0"),
    ("mmctr-negative-views-level-in-item-feature", "mmctr", "mmctr",
     lambda r: _edit_table(r / "item_feature.parquet", lambda t: _set_row(t, "views_level", 2, -5)),
     r"item_feature\.parquet: column 'views_level' row 2 is -5; expected a level >= 0"),
    ("mmctr-nan-label", "mmctr", "mmctr",
     lambda r: _edit_table(r / M / "valid.parquet", lambda t: _set_row(t, "label", 3, float("nan"))),
     r"valid\.parquet: column 'label' row 3 is nan; expected 0 or 1"),
    ("mmctr-duplicate-test-id", "mmctr", "mmctr",
     lambda r: _edit_table(r / M / "test.parquet", lambda t: _set_row(t, "ID", 5, 4)),
     r"test\.parquet: column 'ID' repeats 4 \(rows \[4, 5\]\)"),
    # tencentgr, platform layout
    ("tgr-item-text-not-utf8", "tencentgr", "platform",
     lambda r: _item_text(r, pa.table({"creative_id": pa.array([20_000_000_001, 20_000_000_002]), "text": _bad_utf8(["a", "b"], 1)})),
     r"item_text\.parquet: column 'text' row 1 is not valid UTF-8 text"),
    ("tgr-item-text-renamed-column", "tencentgr", "platform",
     lambda r: _item_text(r, pa.table({"creative_id": pa.array([20_000_000_001]), "title": ["a"]})),
     r"item_text\.parquet: missing column\(s\) text; found creative_id, title"),
    ("tgr-item-text-non-digit-creative-id", "tencentgr", "platform",
     lambda r: _item_text(r, pa.table({"creative_id": ["20000000001", "ad-7"], "text": ["a", "b"]})),
     r"item_text\.parquet row 1: column 'creative_id' holds 'ad-7'; expected a creative id"),
    ("tgr-train-user-beyond-indexer", "tencentgr", "platform",
     lambda r: _lines(r / "seq.jsonl", _train_user_beyond_indexer),
     r"seq\.jsonl line 3 record 0: user_id 99 is not a user of indexer\.pkl 'u' \(re-ids 1\.\.6\)"),
    ("tgr-indexer-covers-half-the-items", "tencentgr", "platform",
     lambda r: _indexer(r, _drop_items_from_indexer),
     r"seq\.jsonl: \d+ of \d+ events \(\d+\.\d%\) name items outside indexer\.pkl 'i' \(re-ids 1\.\.10\), more than "
     r"data\.max_unknown_item_share=0\.05"),
    ("tgr-indexer-two-creatives-one-reid", "tencentgr", "platform",
     lambda r: _indexer(r, _same_reid),
     r"indexer\.pkl 'i': creative ids 20000000001, 20000000002 all map to re-id 1"),
    ("tgr-predict-user-twice", "tencentgr", "platform",
     lambda r: _lines(r / "predict_seq.jsonl", _predict_user_twice),
     r"predict_seq\.jsonl: user_id 2 is listed 2 times \(line 1, line 3\); expected one line per user"),
    # tencentgr, parquet release in one folder
    ("tgr-parquet-predict-user-twice", "tencentgr", "parquet",
     lambda r: _edit_table(r / "predict_seq" / "part-00000.parquet", lambda t: pa.concat_tables([t, t.slice(0, 1)])),
     r"predict_seq: user_id 2 is listed 2 times \(part-00000\.parquet row 0, part-00000\.parquet row 2\)"),
    ("tgr-parquet-train-user-beyond-indexer", "tencentgr", "parquet",
     lambda r: _edit_table(r / "seq" / "part-00000.parquet", lambda t: _set_row(t, "user_id", 3, 99)),
     r"seq/part-00000\.parquet row 3: column 'user_id' is 99, not a user of indexer\.pkl 'u' \(re-ids 1\.\.6"),
    # tencentgr, the release as published: train/ + eval/
    ("tgr-release-indexers-disagree", "tencentgr", "release",
     lambda r: _indexer(r / "eval", lambda idx: idx["u"].update({"user_001": 2, "user_002": 1})),
     r"eval/indexer\.pkl 'u': user id 'user_001' has re-id 2, but .*train/indexer\.pkl gives it 1"),
    ("tgr-release-no-evaluation-folder", "tencentgr", "release",
     lambda r: (r / "eval" / "candidate").rename(r / "eval" / "candidates"),
     r"release: no parquet release here: expected seq/ .*found eval/ \(seq/\), train/ \(seq/\)"),
]  # fmt: skip


def _write(layout: str, root: Path) -> None:
    if layout == "mmctr":
        write_mmctr_raw(tiny_raw(), root)
    elif layout == "platform":
        write_platform(tiny_tgr(), root, {"82": 8})
    else:
        write_parquet_layout(tiny_tgr(), root, {"82": 8}, two_folders=layout == "release")


def _prepare(track: str, root: Path, out: Path, *extra: str) -> int:
    args = [
        f"data.raw_dir={root}",
        "data.source=raw",
        f"input_root={out.parent / 'in'}",
        f"output_root={out}",
    ]
    return cli.main(["prepare", "--config", str(ROOT / "configs" / CONFIG[track]), *args, *extra])


@pytest.mark.parametrize(("case", "track", "layout", "edit", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(tmp_path, capfd, case, track, layout, edit, message):
    root = tmp_path / ("release" if layout == "release" else "raw")
    _write(layout, root)
    out = tmp_path / "out"
    if case == "tgr-indexer-covers-half-the-items":  # the same data with a whole indexer passes
        assert _prepare(track, root, out) == 0
        capfd.readouterr()
    edit(root)
    assert _prepare(track, root, out / "bad") == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert __import__("re").search(message, errors[0]), errors[0]
    run = out / "bad" / track / ("movielens" if track == "mmctr" else "tencentgr")
    assert not (run / "prepare").exists()  # nothing half-written
    assert not [p.name for p in run.glob(".prepare*")]  # no temporary folder left behind


def test_knob_accepts_a_partial_indexer(tmp_path):
    """The unknown-item share is a knob: raised, the same data is read with the missing items as item 0."""
    root = tmp_path / "raw"
    _write("platform", root)
    _indexer(root, _drop_items_from_indexer)
    assert _prepare("tencentgr", root, tmp_path / "out", "data.max_unknown_item_share=1.0") == 0
    figures = orjson.loads(
        (
            tmp_path / "out" / "tencentgr" / "tencentgr" / "tencentgr_real" / "prepare" / "manifest.json"
        ).read_bytes()
    )
    assert figures["figures"]["events_unknown_item"] > 0


def test_item_texts_with_digit_string_creative_ids_are_read(tmp_path):
    """The release gives creative ids as digit strings (mm_emb, candidate): the item texts may too."""
    root = tmp_path / "raw"
    _write("platform", root)
    cids = tiny_tgr().creative_id[1:]
    _item_text(
        root, pa.table({"creative_id": [str(c) for c in cids], "text": [f"t{k}" for k in range(len(cids))]})
    )
    assert _prepare("tencentgr", root, tmp_path / "out") == 0
    text = pq.read_table(
        tmp_path / "out" / "tencentgr" / "tencentgr" / "tencentgr_real" / "prepare" / "item_text.parquet"
    ).to_pydict()
    assert text["text"][:3] == ["", "t0", "t1"] and np.all(np.diff(text["item"]) == 1)


def test_two_folder_release_through_the_cli(tmp_path):
    """data.eval_dir names the evaluation folder; the same tables as the folder found inside data.raw_dir."""
    rel = tmp_path / "release"
    _write("release", rel)
    assert _prepare("tencentgr", rel, tmp_path / "a") == 0
    extra = f"data.eval_dir={rel / 'eval'}"
    assert _prepare("tencentgr", rel / "train", tmp_path / "b", extra) == 0
    a, b = (tmp_path / x / "tencentgr" / "tencentgr" / "tencentgr_real" / "prepare" for x in "ab")
    for name in (
        "events.parquet",
        "predict_events.parquet",
        "users.parquet",
        "items.parquet",
        "candidates.parquet",
    ):
        assert pq.read_table(a / name).equals(pq.read_table(b / name)), name
    assert orjson.loads((b / "manifest.json").read_bytes())["figures"]["layout"] == "parquet"


def test_exit_code_and_no_traceback_in_a_fresh_process(tmp_path):
    root = tmp_path / "raw"
    _write("platform", root)
    _indexer(root, _same_reid)
    args = [f"data.raw_dir={root}", "data.source=raw", f"output_root={tmp_path / 'out'}"]
    r = subprocess.run([sys.executable, "-m", "recstack", "prepare", "--config", str(ROOT / "configs" / CONFIG["tencentgr"]), *args],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "all map to re-id 1" in r.stderr
