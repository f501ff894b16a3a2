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
