"""Checked, vectorised column access on Arrow tables: every failure names the file, column and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recstack.errors import DataError


def read_parquet(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    if not path.exists():
        raise DataError(f"{path}: file not found (expected {what})")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    if columns is not None:
        columns = [c for c in columns if c in schema.names]
    return pq.read_table(path, columns=columns)


def require_columns(table: pa.Table, path: Path, names: list[str]) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(table.column_names)}"
        )


def _first_null(col: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])


def int_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """An integer column as int64; strings, floats and nulls are errors."""
    col = table.column(name)
    if not pa.types.is_integer(col.type):
        raise DataError(f"{path}: column '{name}' must be integer, got {col.type}")
    if col.null_count:
        raise DataError(f"{path}: column '{name}' has a null at row {_first_null(col)}")
    return col.to_numpy().astype(np.int64, copy=False)


def number_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """An integer or float column as float64 (labels may be stored either way)."""
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataError(f"{path}: column '{name}' must be numeric, got {col.type}")
    if col.null_count:
        raise DataError(f"{path}: column '{name}' has a null at row {_first_null(col)}")
    return col.to_numpy().astype(np.float64, copy=False)


def check_utf8(col: pa.ChunkedArray | pa.Array, path: Path, name: str, row0: int = 0) -> None:
    """Parquet stores whatever bytes a writer gave a string column; Arrow only checks them on conversion (a
    33-line UnicodeDecodeError / ArrowException). Checked here, once, naming the first bad row."""
    start = row0
    for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            raw = chunk.view(pa.large_binary() if pa.types.is_large_string(chunk.type) else pa.binary())
            for k, b in enumerate(raw.to_pylist()):  # only on failure: find the row
                try:
                    if b is not None:
                        b.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: column '{name}' row {start + k} is not valid UTF-8 text ({e.reason} at byte "
                        f"{e.start}: {b[max(0, e.start - 10) : e.start + 10]!r}); re-encode the file as UTF-8"
                    ) from None
            raise
        start += len(chunk)


def string_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(f"{path}: column '{name}' must be string, got {col.type}")
    check_utf8(col, path, name)
    return np.asarray(col.fill_null("").to_pylist(), dtype=object)


def check_non_negative(values: np.ndarray, path: Path, name: str, what: str) -> None:
    """Ids and levels index embedding tables: a negative one would pass prepare and fail inside torch."""
    bad = values < 0
    if bad.any():
        flat = np.flatnonzero(bad.reshape(len(values), -1).any(1))
        row = int(flat[0])
        v = values[row].min() if values.ndim > 1 else values[row]
        raise DataError(
            f"{path}: column '{name}' row {row} is {int(v)}; expected {what} ({len(flat)} row(s) negative)"
        )


def _list_parts(table: pa.Table, name: str, path: Path, value_check, expected: str):
    col = table.column(name)
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise DataError(f"{path}: column '{name}' must be a list of {expected}, got {t}")
    if not value_check(t.value_type):
        raise DataError(f"{path}: column '{name}' must be a list of {expected}, got list<{t.value_type}>")
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(arr)
    if values.null_count:
        raise DataError(f"{path}: column '{name}' has a null inside a list")
    return arr, lengths, values


def list_matrix(
    table: pa.Table, name: str, path: Path, *, width: int | None = None, ragged: bool = False
) -> np.ndarray:
    """A list<int> column as an (N, W) int64 matrix.

    `ragged=False`: every row must have the same length (the MMCTR `item_seq` is fixed width, left-padded
    with 0). `ragged=True`: shorter rows are left-padded with 0 to the longest (tags). Null rows are errors
    unless ragged (then empty).
    """
    arr, lengths, values = _list_parts(table, name, path, pa.types.is_integer, "integers")
    n = len(arr)
    nulls = np.isnan(lengths.astype(np.float64)) if lengths.dtype.kind == "f" else np.zeros(n, bool)
    if arr.null_count:
        nulls = arr.is_null().to_numpy(zero_copy_only=False)
        if not ragged:
            raise DataError(f"{path}: column '{name}' has a null list at row {int(np.flatnonzero(nulls)[0])}")
    lengths = np.where(nulls, 0, np.nan_to_num(lengths.astype(np.float64))).astype(np.int64)
    flat = values.to_numpy().astype(np.int64, copy=False)
    w = int(lengths.max()) if n else 0
    if width is not None and not ragged:
        if n and (lengths != width).any():
            row = int(np.flatnonzero(lengths != width)[0])
            raise DataError(f"{path}: column '{name}' row {row} has {lengths[row]} items, expected {width}")
        w = width
    if not ragged:
        if n and (lengths != w).any():
            row = int(np.flatnonzero(lengths != w)[0])
            raise DataError(
                f"{path}: column '{name}' is ragged: row {row} has {lengths[row]} items, row 0 has {w} "
                "(expected fixed-width lists, left-padded with 0)"
            )
        return flat.reshape(n, w)
    out = np.zeros((n, w), dtype=np.int64)
    # left-pad: row r's values go to columns [w - len_r, w)
    rows = np.repeat(np.arange(n), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = np.arange(len(flat)) - starts + np.repeat(w - lengths, lengths)
    out[rows, cols] = flat
    return out


def float_matrix(
    table: pa.Table, name: str, path: Path, *, dim: int | None = None, key: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A list<float> embedding column as (N, D) float32 plus a bool mask of rows that have one.

    Null rows are allowed (partial coverage) and come back as zeros with mask False. Any other length than
    `dim` (or than the first non-null row) is an error naming the row and, if given, its item id.
    """
    arr, lengths, values = _list_parts(
        table, name, path, lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "floats"
    )
    n = len(arr)
    has = ~arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else np.ones(n, bool)
    lengths = np.where(has, np.nan_to_num(lengths.astype(np.float64)), 0).astype(np.int64)
    if dim is None:
        dim = int(lengths[has][0]) if has.any() else 0
    bad = has & (lengths != dim)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        who = f"row {row}" + (f" (item_id {int(key[row])})" if key is not None else "")
        raise DataError(f"{path}: column '{name}' {who} has length {lengths[row]}, expected {dim}")
    out = np.zeros((n, dim), dtype=np.float32)
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if not np.isfinite(flat).all():
        pos = int(np.flatnonzero(~np.isfinite(flat))[0])
        row = int(np.searchsorted(np.cumsum(lengths), pos, side="right"))
        raise DataError(f"{path}: column '{name}' row {row} has a NaN or infinite value")
    out[has] = flat.reshape(-1, dim)
    return out, has
