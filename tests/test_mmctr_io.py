"""The mmctr raw layout: round trip, the real challenge files' schema, and every kind of bad input."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.data.raw.mmctr import read_mmctr_raw, split_table, write_mmctr_raw
from recstack.errors import DataError
from recstack.paths import RawMmctr

from conftest import tiny_raw


def assert_same(a, b):
    for name in ("train", "valid", "test"):
        sa, sb = a.split(name), b.split(name)
        for f in ("user_id", "item_seq", "likes_level", "views_level", "item_id", "label", "ids"):
            x, y = getattr(sa, f), getattr(sb, f)
            assert (x is None) == (y is None), f
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=f"{name}.{f}")
    np.testing.assert_array_equal(a.items.tags, b.items.tags)
    assert a.items.title.tolist() == b.items.title.tolist()
    np.testing.assert_array_equal(a.items.likes_level[1:], b.items.likes_level[1:])
    assert set(a.items.emb) == set(b.items.emb)
    for k in a.items.emb:
        np.testing.assert_array_equal(a.items.emb[k], b.items.emb[k])
        np.testing.assert_array_equal(a.items.emb_mask[k][1:], b.items.emb_mask[k][1:])


def test_round_trip(tmp_path):
    raw = tiny_raw()
    write_mmctr_raw(raw, tmp_path)
    back = read_mmctr_raw(tmp_path)
    assert_same(raw, back)
    assert not back.items.emb_mask["img_emb_CLIPRN50"][3]  # partial coverage survives


def test_max_hist_keeps_most_recent(tmp_path):
    raw = tiny_raw(width=8)
    write_mmctr_raw(raw, tmp_path)
    back = read_mmctr_raw(tmp_path, max_hist=3)
    np.testing.assert_array_equal(back.train.item_seq, raw.train.item_seq[:, -3:])


def real_schema_files(root):
    """Files written column by column with the real MicroLens_1M_x1 names and dtypes (not by our writer)."""
    d = root / "MicroLens_1M_x1"
    d.mkdir(parents=True)
    seq_t = pa.list_(pa.int64())
    rows = {
        "user_id": pa.array([1, 2, 2], pa.int64()),
        "item_seq": pa.array([[0, 0, 3], [0, 1, 2], [1, 2, 3]], seq_t),
        "likes_level": pa.array([3, 0, 9], pa.int64()),
        "views_level": pa.array([1, 5, 2], pa.int64()),
        "item_id": pa.array([2, 3, 1], pa.int64()),
    }
    pq.write_table(pa.table({**rows, "label": pa.array([1.0, 0.0, 0.0], pa.float64())}), d / "train.parquet")
    pq.write_table(pa.table({**rows, "label": pa.array([0.0, 1.0, 1.0], pa.float64())}), d / "valid.parquet")
    pq.write_table(pa.table({"ID": pa.array([0, 1, 2], pa.int64()), **rows}), d / "test.parquet")
    emb = [[0.0] * 128] + [[float(i)] * 128 for i in range(1, 4)]
    info = {
        "item_id": pa.array([0, 1, 2, 3], pa.int64()),
        "item_tags": pa.array([[0] * 5, [0, 0, 0, 4, 7], [0, 0, 0, 0, 7], [1, 2, 3, 4, 5]], seq_t),
        "item_emb_d128": pa.array(emb, pa.list_(pa.float32())),
    }
    pq.write_table(pa.table(info), d / "item_info.parquet")
    feat = {
        "item_id": pa.array([1, 2, 3], pa.int64()),
        "item_title": pa.array(["a cat", "a dog", None], pa.string()),
        "item_tags": pa.array([[4, 7], [7], [1, 2, 3, 4, 5]], seq_t),
        "likes_level": pa.array([1, 2, 3], pa.int64()),
        "views_level": pa.array([4, 5, 6], pa.int64()),
        "txt_emb_BERT": pa.array([[0.1] * 768, [0.2] * 768, [0.3] * 768], pa.list_(pa.float32())),
        "img_emb_CLIPRN50": pa.array([[0.1] * 1024, None, [0.3] * 1024], pa.list_(pa.float32())),
    }
    pq.write_table(pa.table(feat), root / "item_feature.parquet")
    (root / "item_images").mkdir()
    (root / "item_images" / "2.jpg").write_bytes(b"\xff\xd8")


def test_reads_real_challenge_schema(tmp_path):
    real_schema_files(tmp_path)
    raw = read_mmctr_raw(tmp_path)
    assert raw.train.item_seq.tolist() == [[0, 0, 3], [0, 1, 2], [1, 2, 3]]
    assert raw.test.ids.tolist() == [0, 1, 2] and raw.test.label is None
    assert raw.train.label.dtype == np.float32
    assert raw.items.tags[1].tolist() == [0, 0, 0, 4, 7]
    assert raw.items.emb["item_emb_d128"].shape == (4, 128)
    assert raw.items.emb["txt_emb_BERT"].shape == (4, 768)
    assert raw.items.emb_mask["img_emb_CLIPRN50"].tolist() == [False, True, False, True]
    assert raw.items.title.tolist() == ["", "a cat", "a dog", ""]
    assert raw.image_ids.tolist() == [2]


# ---- bad input: each names the file and the column/row, and says what was expected -------------------
def _rewrite(path, **cols):
    t = pq.read_table(path)
    for name, arr in cols.items():
        if arr is None:
            t = t.drop_columns([name])
        else:
            t = t.set_column(t.column_names.index(name), name, arr)
    pq.write_table(t, path)


@pytest.fixture
def raw_dir(tmp_path):
    write_mmctr_raw(tiny_raw(), tmp_path)
    return tmp_path


def test_missing_file(raw_dir):
    RawMmctr(raw_dir).split("valid").unlink()
    with pytest.raises(DataError, match=r"valid\.parquet: file not found"):
        read_mmctr_raw(raw_dir)


def test_missing_column(raw_dir):
    _rewrite(RawMmctr(raw_dir).split("train"), likes_level=None)
    with pytest.raises(DataError, match=r"train\.parquet: missing column\(s\) likes_level"):
        read_mmctr_raw(raw_dir)


def test_string_item_ids(raw_dir):
    p = RawMmctr(raw_dir).split("train")
    n = pq.read_metadata(p).num_rows
    _rewrite(p, item_id=pa.array([str(i) for i in range(1, n + 1)]))
    with pytest.raises(DataError, match=r"train\.parquet: column 'item_id' must be integer, got string"):
        read_mmctr_raw(raw_dir)


def test_ragged_item_seq(raw_dir):
    p = RawMmctr(raw_dir).split("valid")
    seqs = pq.read_table(p).column("item_seq").to_pylist()
    seqs[5] = seqs[5][1:]
    _rewrite(p, item_seq=pa.array(seqs, pa.list_(pa.int64())))
    with pytest.raises(DataError, match=r"valid\.parquet: column 'item_seq' is ragged: row 5 has 7 items"):
        read_mmctr_raw(raw_dir)


def test_non_list_item_seq(raw_dir):
    p = RawMmctr(raw_dir).split("train")
    seqs = pq.read_table(p).column("item_seq").to_pylist()
    _rewrite(p, item_seq=pa.array([" ".join(map(str, s)) for s in seqs]))
    with pytest.raises(DataError, match=r"column 'item_seq' must be a list of integers, got string"):
        read_mmctr_raw(raw_dir)


def test_target_outside_item_info(raw_dir):
    p = RawMmctr(raw_dir).split("test")
    ids = pq.read_table(p).column("item_id").to_numpy().copy()
    ids[7] = 999
    _rewrite(p, item_id=pa.array(ids))
    with pytest.raises(
        DataError, match=r"test\.parquet: column 'item_id' row 7 has id 999 outside item_info"
    ):
        read_mmctr_raw(raw_dir)


def test_history_outside_item_info(raw_dir):
    p = RawMmctr(raw_dir).split("train")
    seqs = pq.read_table(p).column("item_seq").to_pylist()
    seqs[3][-1] = 30  # item_info has rows 0..29
    _rewrite(p, item_seq=pa.array(seqs, pa.list_(pa.int64())))
    with pytest.raises(
        DataError, match=r"column 'item_seq' row 3 has id 30 outside item_info \(expected 0..29\)"
    ):
        read_mmctr_raw(raw_dir)


def test_label_outside_0_1(raw_dir):
    p = RawMmctr(raw_dir).split("valid")
    y = pq.read_table(p).column("label").to_numpy().copy()
    y[4] = 2.0
    _rewrite(p, label=pa.array(y))
    with pytest.raises(DataError, match=r"column 'label' row 4 is 2.0; expected 0 or 1"):
        read_mmctr_raw(raw_dir)


def test_duplicate_test_ids(raw_dir):
    p = RawMmctr(raw_dir).split("test")
    ids = np.arange(20)
    ids[9] = 3
    _rewrite(p, ID=pa.array(ids))
    with pytest.raises(DataError, match=r"column 'ID' repeats 3 \(rows \[3, 9\]\)"):
        read_mmctr_raw(raw_dir)


def test_provided_embedding_wrong_length(raw_dir):
    p = RawMmctr(raw_dir).item_feature
    emb = pq.read_table(p).column("txt_emb_BERT").to_pylist()
    emb[4] = emb[4][:-1]
    _rewrite(p, txt_emb_BERT=pa.array(emb, pa.list_(pa.float32())))
    with pytest.raises(DataError, match=r"'txt_emb_BERT' row 4 \(item_id 5\) has length 11, expected 12"):
        read_mmctr_raw(raw_dir)


def test_item_emb_d128_must_be_128(raw_dir):
    p = RawMmctr(raw_dir).item_info
    emb = [r[:64] for r in pq.read_table(p).column("item_emb_d128").to_pylist()]
    _rewrite(p, item_emb_d128=pa.array(emb, pa.list_(pa.float32())))
    with pytest.raises(DataError, match=r"item_info\.parquet: column 'item_emb_d128' row 0 .* expected 128"):
        read_mmctr_raw(raw_dir)


def test_empty_split(raw_dir):
    p = RawMmctr(raw_dir).split("valid")
    pq.write_table(pq.read_table(p).slice(0, 0), p)
    with pytest.raises(DataError, match=r"valid\.parquet: the valid split is empty"):
        read_mmctr_raw(raw_dir)


def test_not_parquet(raw_dir):
    RawMmctr(raw_dir).split("train").write_text("user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match=r"train\.parquet: not a readable parquet file"):
        read_mmctr_raw(raw_dir)


def test_split_table_uses_challenge_dtypes():
    t = split_table(tiny_raw().train)
    assert t.schema.field("item_seq").type == pa.list_(pa.int64())
    assert t.schema.field("label").type == pa.float64()
    assert t.column_names == ["user_id", "item_seq", "likes_level", "views_level", "item_id", "label"]
