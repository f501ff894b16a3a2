"""Atomic writes and fingerprints: an interrupted write never leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.errors import WriteError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds. A full disk, a
    read-only folder or a missing permission is a WriteError naming `path` (the temporary file removed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        failure = WriteError.of(e, path)
        if failure is None:
            raise
        raise WriteError(path, failure.reason) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a whole folder under a temporary name, then swap it in: readers see the old or the new one.

    Any write inside that fails for want of space or permission (through this module or not: checkpoints,
    indexes, figures) is a WriteError naming the file under its final name and the folder as the stage; the
    temporary folder is removed and the existing folder left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        failure = WriteError.of(e, path, path.name)
        if failure is None:
            raise
        raise failure from None
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except WriteError as e:
        raise e.within(tmp, path, path.name) from None
    except OSError as e:
        failure = WriteError.of(e, path)
        if failure is None:
            raise
        raise failure.within(tmp, path, path.name) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_fingerprint(path: str | Path) -> str:
    """Cheap fingerprint of an input: size + mtime for files, the same over the tree for folders.

    Content hashes of multi-GB competition files would cost minutes on every run; a rewrite changes mtime,
    which at worst reruns a stage that did not need it.
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def link_tree(src: Path, dst: Path) -> None:
    """The files of folder `src` under `dst` (an existing, empty folder) as hard links (copies across file
    systems). Safe for artifacts: nothing rewrites a finished file in place (every write goes through a
    temporary name and a rename), so a new version in one folder never shows through the other."""
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]
