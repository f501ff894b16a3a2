"""One scored-rows format for every model on both tracks: (split, query, item, score, rank)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recstack.artifacts import write_table
from recstack.data.tables.predictions import (
    COLUMNS,
    predictions_table,
    ranking_table,
    read_predictions,
    read_ranking,
    read_scored,
)
from recstack.errors import DataError
from recstack.paths import Predictions


def test_both_tracks_write_the_same_columns(tmp_path):
    point = predictions_table({"valid": (np.array([7, 3]), np.array([0.2, 0.9]), np.array([11, 12]))})
    ranked = ranking_table({"test": (np.array([[5, 6], [8, 9]]), np.array([[2.0, 1.0], [3.0, 0.5]]))})
    assert tuple(point.column_names) == COLUMNS == tuple(ranked.column_names)
    write_table(tmp_path / Predictions.FILE, pa.concat_tables([point, ranked]))
    # joined on keys, not position
    np.testing.assert_allclose(read_predictions(tmp_path, "valid", np.array([3, 7])), [0.9, 0.2], rtol=1e-6)
    items, scores = read_ranking(tmp_path, "test", 2)
    assert items.tolist() == [[5, 6], [8, 9]] and scores[1].tolist() == [3.0, 0.5]
    v = read_scored(tmp_path, "valid")
    assert v["item"].tolist() == [11, 12] and v["rank"].tolist() == [0, 0]


def test_scored_rows_errors(tmp_path):
    write_table(
        tmp_path / Predictions.FILE, predictions_table({"valid": (np.array([1, 1]), np.array([0.1, 0.2]))})
    )
    with pytest.raises(DataError, match="duplicate query"):
        read_predictions(tmp_path, "valid", np.array([1]))
    write_table(tmp_path / Predictions.FILE, predictions_table({"valid": (np.array([1]), np.array([0.1]))}))
    with pytest.raises(DataError, match="no prediction for row id 2"):
        read_predictions(tmp_path, "valid", np.array([1, 2]))
    with pytest.raises(DataError, match="no ranking for query 1"):
        write_table(
            tmp_path / Predictions.FILE, ranking_table({"test": (np.ones((1, 3), int), np.ones((1, 3)))})
        )
        read_ranking(tmp_path, "test", 2)
    write_table(tmp_path / Predictions.FILE, pa.table({"split": ["valid"], "row_id": [1], "pred": [0.5]}))
    with pytest.raises(DataError, match=r"missing column\(s\) \['query', 'item', 'score', 'rank'\]"):
        read_scored(tmp_path, "valid")
