"""An output that cannot be written (full disk, read-only folder, no permission) is reported, not a traceback:
exit 2 with the path, the reason, the free space and the stage; the temporary folder removed; an existing
stage folder left exactly as it was."""

from __future__ import annotations

import errno
import os
import pathlib
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack import artifacts, cli
from recstack.artifacts import atomic_dir, write_table, write_text
from recstack.data.raw.mmctr import write_mmctr_raw
from recstack.errors import WriteError

from conftest import ROOT, tiny_raw


def _full_disk(monkeypatch, after: int = 0):
    """pq.write_table as on a full disk: the `after`-th call and every later one fail with ENOSPC."""
    real, calls = pq.write_table, []

    def write(table, where, *a, **k):
        calls.append(where)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, *a, **k)

    monkeypatch.setattr(artifacts.pq, "write_table", write)
    return calls


def test_full_disk_inside_a_stage_folder_names_the_final_file_and_keeps_the_old_folder(tmp_path, monkeypatch):
    stage = tmp_path / "run" / "retrieve"
    stage.mkdir(parents=True)
    (stage / "old.txt").write_text("the previous run")
    _full_disk(monkeypatch)
    with pytest.raises(WriteError) as e, atomic_dir(stage) as tmp:
        write_text(tmp / "figures.txt", "new")
        write_table(tmp / "predictions.parquet", pa.table({"a": [1]}))
    msg = str(e.value)
    assert msg.startswith(f"stage retrieve: cannot write {stage / 'predictions.parquet'}: "), msg
    assert "no space left on the device [Errno 28]" in msg
    free = re.search(r"\((\d+\.\d\d) GiB free on (\S+)\)", msg)
    assert free and pathlib.Path(free.group(2)).exists(), msg
    assert sorted(p.name for p in stage.iterdir()) == ["old.txt"]  # nothing in the stage folder changed
    assert (stage / "old.txt").read_text() == "the previous run"
    assert [p.name for p in stage.parent.iterdir()] == ["retrieve"]  # the temporary folder is gone


def test_a_write_outside_the_artifact_helpers_is_named_too(tmp_path):
    """A checkpoint, an index or a figure written straight into the temporary folder (torch.save, faiss,
    matplotlib) fails the same way and is named by its final path."""
    stage = tmp_path / "seqrec"
    with pytest.raises(WriteError, match=rf"^stage seqrec: cannot write {re.escape(str(stage / 'model.pt'))}: "
                                         r"permission denied \[Errno 13\]"), atomic_dir(stage) as tmp:  # fmt: skip
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp / "model.pt"))
    assert not stage.exists() and list(tmp_path.iterdir()) == []


def test_read_only_file_and_other_errors(tmp_path, monkeypatch):
    def replace(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(artifacts.os, "replace", replace)
    with pytest.raises(
        WriteError, match=r"cannot write .*leaderboard\.csv: read-only file system \[Errno 30\]"
    ):
        write_text(tmp_path / "leaderboard.csv", "x")
    assert list(tmp_path.iterdir()) == []  # the temporary file is removed
    monkeypatch.undo()
    # an error that is no write failure is not disguised as one
    with pytest.raises(FileNotFoundError), atomic_dir(tmp_path / "s"):
        raise FileNotFoundError(errno.ENOENT, "No such file", "x")
    assert WriteError.of(OSError(errno.ENOENT, "x")) is None


def _raw(tmp_path):
    write_mmctr_raw(tiny_raw(), tmp_path / "raw")


def _prepare(tmp_path, *extra):
    root = tmp_path / "raw"
    args = [f"data.raw_dir={root}", "data.source=raw", f"output_root={tmp_path / 'out'}", *extra]
    return cli.main(["prepare", "--config", str(ROOT / "configs" / "mmctr_movielens.yaml"), *args])


def test_cli_full_disk_exits_2_naming_the_stage_with_no_traceback(tmp_path, capfd, monkeypatch):
    _raw(tmp_path)
    calls = _full_disk(monkeypatch)
    assert _prepare(tmp_path) == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(
        r"stage prepare: cannot write \S+/prepare/\S+\.parquet: no space left on the device", errors[0]
    )
    assert calls  # the failure came from the write, not earlier
    run = tmp_path / "out" / "mmctr" / "movielens" / "mmctr_movielens"
    assert not (run / "prepare").exists() and not list(run.glob(".prepare*"))


def test_cli_read_only_output_root_exits_2_with_no_traceback(tmp_path, capfd, caplog, monkeypatch):
    """The log folder is the first write: it fails before logging to a file is set up, so the error goes to
    stderr (or to the logger already installed, as under pytest)."""
    _raw(tmp_path)
    out = tmp_path / "out"
    real = pathlib.Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    assert _prepare(tmp_path) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = [line.removeprefix("error: ") for line in err.splitlines() if "cannot write" in line]
    lines += [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 1 and lines[0].startswith(f"cannot write {out}"), (err, caplog.text)
    assert "read-only file system [Errno 30]" in lines[0] and "GiB free on" in lines[0]
    assert not out.exists() and os.path.isdir(tmp_path / "raw")
