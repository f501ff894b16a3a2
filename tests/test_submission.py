import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from recstack.ensemble.submission import read_mmctr, validate_mmctr, write_mmctr
from recstack.errors import DataError

IDS = np.arange(5)


def test_writes_csv_and_zip(tmp_path):
    path = write_mmctr(tmp_path, IDS[::-1], np.linspace(0, 1, 5), IDS, "Task2")
    assert path.name == "prediction.zip"
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["prediction.csv"]
        text = zf.read("prediction.csv").decode()
    assert text.splitlines()[0] == "ID,Task2"
    df = read_mmctr(path)
    assert df["ID"].tolist() == [0, 1, 2, 3, 4]  # sorted by ID
    assert df["Task2"].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert (tmp_path / "prediction.csv").read_text() == text


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (pd.DataFrame({"ID": IDS, "Task9": 0.5}), "prediction column 'Task9' is not one of"),
        (pd.DataFrame({"id": IDS, "Task2": 0.5}), "header is id,Task2; expected ID,Task2"),
        (pd.DataFrame({"ID": IDS[:4], "Task2": 0.5}), "has 4 rows; the test set has 5"),
        (pd.DataFrame({"ID": [0, 1, 2, 3, 3], "Task2": 0.5}), "column 'ID' repeats 3"),
        (pd.DataFrame({"ID": [0, 1, 2, 3, 9], "Task2": 0.5}), "test ID 4 has no prediction"),
        (pd.DataFrame({"ID": IDS, "Task2": [0.1, np.nan, 0.2, 0.3, 0.4]}), "row 1 is NaN"),
        (
            pd.DataFrame({"ID": IDS, "Task2": [0.1, 0.2, 1.5, 0.3, 0.4]}),
            "row 2 is 1.5; expected a probability",
        ),
    ],
)
def test_validator_rejects(df, message):
    column = df.columns[1] if df.columns[0] == "ID" else "Task2"
    with pytest.raises(DataError, match=message):
        validate_mmctr(df, IDS, column)


def test_invalid_submission_writes_nothing(tmp_path):
    with pytest.raises(DataError):
        write_mmctr(tmp_path, IDS, [0.1, 0.2, np.nan, 0.3, 0.4], IDS, "Task2")
    assert list(tmp_path.iterdir()) == []


def test_read_rejects_missing_and_bad_zip(tmp_path):
    with pytest.raises(DataError, match="submission file not found"):
        read_mmctr(tmp_path / "none.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable submission"):
        read_mmctr(bad)


# ---- one planted defect per rule (mmctr) -------------------------------------------------------------
def test_validator_rejects_non_integer_ids():
    with pytest.raises(DataError, match="column 'ID' row 2 is not an integer"):
        validate_mmctr(pd.DataFrame({"ID": [0, 1, "x", 3, 4], "Task2": 0.5}), IDS, "Task2")
    with pytest.raises(DataError, match="is -0.1; expected a probability"):
        validate_mmctr(pd.DataFrame({"ID": IDS, "Task2": [0.1, -0.1, 0.2, 0.3, 0.4]}), IDS, "Task2")
    with pytest.raises(DataError, match="row 0 is NaN or not a number"):
        validate_mmctr(pd.DataFrame({"ID": IDS, "Task2": ["high", 0.1, 0.2, 0.3, 0.4]}), IDS, "Task2")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            {"predictions.csv": "ID,Task2\n0,0.5\n"},
            r"expected exactly one member prediction.csv inside, found \['predictions.csv'\]",
        ),
        ({"prediction.csv": "ID,Task2\n", "extra.csv": "x\n"}, "expected exactly one member prediction.csv"),
        ({"sub/prediction.csv": "ID,Task2\n"}, r"found \['sub/prediction.csv'\]"),
        ({}, r"found \[\]"),
    ],
)
def test_read_rejects_a_wrong_zip_member(tmp_path, members, message):
    path = tmp_path / "prediction.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    with pytest.raises(DataError, match=message):
        read_mmctr(path)


def test_written_zip_reads_back_and_validates(tmp_path):
    path = write_mmctr(tmp_path, IDS, np.full(5, 0.5), IDS, "Task1&2")
    df = read_mmctr(path)
    validate_mmctr(df, IDS, "Task1&2")
    assert list(df.columns) == ["ID", "Task1&2"]


# ---- one planted defect per rule (tencentgr) ---------------------------------------------------------
POOL = np.arange(100, 130)
OK = [list(range(100, 110)), list(range(110, 120)), list(range(120, 130))]
USERS = ["a", "b", "c"]


@pytest.mark.parametrize(
    ("top10s", "users", "message"),
    [
        (OK[:2], USERS[:2], "answers 2 users; the predict set has 3"),  # a missing user
        (OK, ["a", "x", "c"], "user 1 is 'x'; expected 'b'"),  # a wrong / missing user id
        (OK, ["a", "c", "b"], "user 1 is 'c'; expected 'b'"),  # users out of predict order
        (OK[:2], USERS, "2 top-10 lists for 3 users"),
        ([OK[0], OK[1][:9], OK[2]], USERS, r"user 1 \(b\) has 9 items; expected 10"),  # fewer than 10
        ([OK[0], OK[1] + [125], OK[2]], USERS, r"user 1 \(b\) has 11 items; expected 10"),
        ([OK[0], [*OK[1][:9], 110], OK[2]], USERS, r"user 1 \(b\) repeats an item"),  # a duplicate in a list
        (
            [OK[0], OK[1], [*OK[2][:9], 999]],
            USERS,
            r"user 2 \(c\) has creative_id 999, which is not in the candidate pool",
        ),
        ([OK[0], OK[1], [*OK[2][:9], "129"]], USERS, "creative ids must be integers"),
    ],
)
def test_tgr_validator_rejects(top10s, users, message):
    from recstack.ensemble.submission import validate_tgr

    with pytest.raises(DataError, match=message):
        validate_tgr(top10s, users, USERS, POOL)


def test_tgr_reader_rejects_bad_files(tmp_path):
    from recstack.ensemble.submission import read_tgr

    bad = tmp_path / "submission.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_tgr(bad)
    bad.write_text('{"top10s": []}')
    with pytest.raises(DataError, match="expected"):
        read_tgr(bad)
    with pytest.raises(DataError, match="submission file not found"):
        read_tgr(tmp_path / "none.json")


def test_zip_is_byte_identical_across_runs(tmp_path):
    ids = np.arange(5)
    pred = np.linspace(0.1, 0.9, 5)
    first = write_mmctr(tmp_path / "a", ids, pred, ids, "Task2", True).read_bytes()
    time.sleep(2.1)  # a zip stores times in 2-second steps: a clock-dated member would differ now
    second = write_mmctr(tmp_path / "b", ids, pred, ids, "Task2", True).read_bytes()
    assert first == second


def test_tgr_submission_is_checked_against_the_predict_users_not_itself(tmp_path):
    from recstack.ensemble.submission import write_tgr

    top = np.arange(1, 21).reshape(2, 10)
    with pytest.raises(DataError, match="answers 2 users; the predict set has 3"):
        write_tgr(tmp_path, top, ["a", "b"], np.arange(30), ["a", "b", "c"])
    with pytest.raises(DataError, match="'a' is answered twice"):
        write_tgr(tmp_path, top, ["a", "a"], np.arange(30), ["a", "a"])
    assert list(tmp_path.iterdir()) == []
    write_tgr(tmp_path, top, ["a", "b"], np.arange(30), ["a", "b"])
    assert (tmp_path / "submission.json").is_file()
