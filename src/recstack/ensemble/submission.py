"""Submission files. MMCTR: `prediction.csv` with header `ID,<Task>` (one row per test ID), zipped.
TencentGR: `{"top10s": [[creative_id x 10], ...], "user_list": [...]}` JSON plus a readable CSV.

The validator runs before every write, so a file that the challenge would reject is never produced.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.artifacts import atomic_path
from recstack.config import MMCTR_COLUMNS
from recstack.errors import DataError
from recstack.paths import Submission
from recstack.tasks import TGR_K


def validate_mmctr(df: pd.DataFrame, test_ids: np.ndarray, column: str, source: str = "submission") -> None:
    """Raise DataError unless `df` is exactly one valid probability per test ID under header ID,<column>."""
    if column not in MMCTR_COLUMNS:
        raise DataError(f"{source}: prediction column {column!r} is not one of {', '.join(MMCTR_COLUMNS)}")
    if list(df.columns) != ["ID", column]:
        raise DataError(f"{source}: header is {','.join(map(str, df.columns))}; expected ID,{column}")
    if len(df) != len(test_ids):
        raise DataError(f"{source}: has {len(df)} rows; the test set has {len(test_ids)}")
    ids = pd.to_numeric(df["ID"], errors="coerce")
    if ids.isna().any() or (ids != ids.round()).any():
        raise DataError(
            f"{source}: column 'ID' row {int(np.flatnonzero(ids.isna())[0]) if ids.isna().any() else 0} is not an integer"
        )
    dup = ids.duplicated()
    if dup.any():
        raise DataError(
            f"{source}: column 'ID' repeats {int(ids[dup].iloc[0])} (row {int(np.flatnonzero(dup)[0])})"
        )
    missing = np.setdiff1d(test_ids, ids.to_numpy(np.int64))
    if len(missing):
        raise DataError(f"{source}: test ID {int(missing[0])} has no prediction ({len(missing)} missing)")
    pred = pd.to_numeric(df[column], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(pred)
    if bad.any():
        raise DataError(
            f"{source}: column '{column}' row {int(np.flatnonzero(bad)[0])} is NaN or not a number"
        )
    out = (pred < 0) | (pred > 1)
    if out.any():
        r = int(np.flatnonzero(out)[0])
        raise DataError(f"{source}: column '{column}' row {r} is {pred[r]}; expected a probability in [0, 1]")


ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def write_mmctr(
    folder: Path, ids: np.ndarray, pred: np.ndarray, test_ids: np.ndarray, column: str, zip_it: bool = True
) -> Path:
    """Validate, then write prediction.csv (and prediction.zip holding it) atomically; returns the file to submit."""
    df = pd.DataFrame({"ID": np.asarray(ids, np.int64), column: np.asarray(pred, np.float64)})
    df = df.sort_values("ID", ignore_index=True)
    validate_mmctr(df, test_ids, column)
    text = df.to_csv(index=False, float_format="%.6f")
    csv_path = folder / Submission.MMCTR_CSV
    with atomic_path(csv_path) as tmp:
        tmp.write_text(text)
    if not zip_it:
        return csv_path
    zip_path = folder / Submission.MMCTR_ZIP
    # a fixed member time (the zip epoch) and mode: the same predictions give a byte-identical zip
    member = zipfile.ZipInfo(Submission.MMCTR_CSV, date_time=ZIP_TIME)
    member.compress_type, member.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(member, text)
    return zip_path


def read_mmctr(path: str | Path) -> pd.DataFrame:
    """A submission as written above: a .csv, or a .zip holding exactly one .csv."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: submission file not found")
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if names != [Submission.MMCTR_CSV]:  # the challenge reads prediction.csv from the zip
                    raise DataError(
                        f"{path}: expected exactly one member {Submission.MMCTR_CSV} inside, found {names}"
                    )
                return pd.read_csv(io.BytesIO(zf.read(names[0])))
        return pd.read_csv(path)
    except (zipfile.BadZipFile, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable submission ({e})") from None


# ---- TencentGR: top-10 creative ids per user ---------------------------------------------------------


def validate_tgr(
    top10s: list[list[int]],
    user_list: list[str],
    expected_users: list[str],
    pool: np.ndarray,
    source: str = "submission",
) -> None:
    """Every user answered once, in order, with exactly 10 distinct creative ids from the candidate pool."""
    if len(user_list) != len(expected_users):
        raise DataError(
            f"{source}: answers {len(user_list)} users; the predict set has {len(expected_users)}"
        )
    if len(top10s) != len(user_list):
        raise DataError(f"{source}: {len(top10s)} top-10 lists for {len(user_list)} users")
    seen: dict[str, int] = {}
    for k, u in enumerate(map(str, user_list)):
        if u in seen:
            raise DataError(f"{source}: user {u!r} is answered twice (entries {seen[u]} and {k})")
        seen[u] = k
    for k, (got, want) in enumerate(zip(user_list, expected_users, strict=True)):
        if str(got) != str(want):
            raise DataError(f"{source}: user {k} is {got!r}; expected {want!r} (users in predict order)")
    flat = np.asarray([c for row in top10s for c in row])
    for k, row in enumerate(top10s):
        if len(row) != TGR_K:
            raise DataError(f"{source}: user {k} ({user_list[k]}) has {len(row)} items; expected {TGR_K}")
        if len(set(row)) != TGR_K:
            raise DataError(f"{source}: user {k} ({user_list[k]}) repeats an item: {row}")
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise DataError(f"{source}: creative ids must be integers, got {flat.dtype}")
    outside = ~np.isin(flat, pool)
    if outside.any():
        pos = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"{source}: user {pos // TGR_K} ({user_list[pos // TGR_K]}) has creative_id {flat[pos]}, "
            "which is not in the candidate pool"
        )


def write_tgr(
    folder: Path, top10s: np.ndarray, user_list: list[str], pool: np.ndarray, expected_users: list[str]
) -> Path:
    """Validate against the predict users read by prepare (`expected_users`, in answer order), then write
    submission.json (what the platform takes) and submission.csv; returns the json."""
    rows = [list(map(int, r)) for r in np.asarray(top10s)]
    users = [str(u) for u in user_list]
    validate_tgr(rows, users, [str(u) for u in expected_users], pool)
    json_path = folder / Submission.TGR_JSON
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps({"top10s": rows, "user_list": users}))
    csv = pd.DataFrame({"user_id": users, "item_ids": [" ".join(map(str, r)) for r in rows]})
    with atomic_path(folder / Submission.TGR_CSV) as tmp:
        tmp.write_text(csv.to_csv(index=False))
    return json_path


def read_tgr(path: str | Path) -> tuple[list[list[int]], list[str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: submission file not found")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or not {"top10s", "user_list"} <= set(obj):
        raise DataError(f'{path}: expected {{"top10s": [[...]], "user_list": [...]}}')
    return obj["top10s"], [str(u) for u in obj["user_list"]]
