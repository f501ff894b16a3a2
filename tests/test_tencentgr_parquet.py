"""The TencentGR parquet-release reader: same canonical tables as the platform reader, and clear errors."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.data.raw import tencentgr_parquet as tp
from recstack.data.raw.tencentgr import TgrEvents, TgrRaw
from recstack.data.raw.tencentgr_parquet import read_parquet_layout, write_parquet_layout
from recstack.data.raw.tencentgr_platform import read_platform, write_platform
from recstack.errors import DataError
from recstack.paths import PreparedTGR

EMB_DIMS = {"82": 4}
MM = ("81", "82")
TABLES = (
    PreparedTGR.EVENTS,
    PreparedTGR.PREDICT_EVENTS,
    PreparedTGR.USERS,
    PreparedTGR.ITEMS,
    PreparedTGR.CANDIDATES,
    PreparedTGR.PREDICT_USERS,
)


def _events(rows: list[tuple[int, int, int, int]]) -> TgrEvents:
    u, i, a, t = (np.array(c, np.int64) for c in zip(*rows, strict=True))
    return TgrEvents(u, i, a, t)


def tiny_tgr() -> TgrRaw:
    """5 users, 8 items, a pool with 2 cold items, partial embeddings 81 (32-d) and 82 (4-d)."""
    n_u, n_i = 5, 8
    rng = np.random.default_rng(0)
    creative = np.array([0, *(1000 + 7 * i for i in range(1, n_i + 1))], np.int64)
    item_sparse = {
        "100": np.array([0, 1, 2, 1, 3, 0, 2, 1, 4]),
        "101": np.array([0, 5, 0, 6, 6, 7, 0, 5, 5]),
        "112": np.array([0, 9, 9, 8, 8, 9, 9, 0, 8]),
    }
    events = _events([
        (1, 3, 0, 100), (1, 1, 1, 105), (1, 4, 0, 110),
        (2, 2, 0, 50), (2, 8, 2, 60),
        (3, 5, 0, 10), (3, 5, 1, 10), (3, 6, 0, 20), (3, 7, 0, 30),
        (4, 1, 0, 500),
    ])  # fmt: skip
    predict_events = _events([(2, 2, 0, 70), (2, 3, 1, 80), (5, 4, 0, 90)])
    cand = np.array([creative[2], 9999, creative[5], 8888, creative[7]], np.int64)
    mm81_cids = np.array([creative[1], creative[2], creative[3], 9999, 123456], np.int64)
    mm82_cids = np.array([creative[4], creative[5]], np.int64)
    return TgrRaw(
        user_raw=np.array(["", "ua", "ub", "uc", "ud", "ue"], dtype=object),
        creative_id=creative,
        item_sparse=item_sparse,
        user_sparse={"103": np.array([0, 1, 2, 0, 1, 2]), "105": np.array([0, 0, 3, 3, 4, 4])},
        user_array={"106": [[], [1, 2], [], [3], [4, 5, 6], [7]], "110": [[], [], [9], [], [], [8, 8]]},
        events=events,
        profile_ts=np.arange(n_u + 1, dtype=np.int64) * 10,
        predict_users=np.array([5, 2], np.int64),
        predict_events=predict_events,
        cand_creative_id=cand,
        cand_features={
            "100": np.array([2, 1, 3, 0, 1]),
            "112": np.array([9, 7, 8, 6, 0]),
            "200": np.array([0, 1, 0, 0, 2]),
        },
        mm={
            "81": (mm81_cids, rng.standard_normal((5, 32)).astype(np.float32)),
            "82": (mm82_cids, rng.standard_normal((2, 4)).astype(np.float32)),
        },
    )


def _same_outputs(a: Path, b: Path) -> None:
    for name in TABLES:
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        assert ta.equals(tb), f"{name} differs:\n{ta.to_pandas()}\n{tb.to_pandas()}"
    for feat in MM:
        for f in (PreparedTGR.mm_emb(feat), PreparedTGR.mm_mask(feat)):
            np.testing.assert_array_equal(np.load(a / f), np.load(b / f), err_msg=f)


@pytest.fixture
def layouts(tmp_path: Path) -> tuple[TgrRaw, Path, dict]:
    """The tiny dataset written in both layouts; the platform one read once (the reference)."""
    raw = tiny_tgr()
    write_platform(raw, tmp_path / "platform", emb_dims=EMB_DIMS)
    ref = read_platform(tmp_path / "platform", tmp_path / "ref", mm_feats=MM, emb_dims=EMB_DIMS)
    write_parquet_layout(raw, tmp_path / "pq", emb_dims=EMB_DIMS)
    return raw, tmp_path, ref


@pytest.mark.parametrize("split", [False, True])
def test_round_trip_matches_platform_reader(layouts, tmp_path: Path, monkeypatch, split: bool) -> None:
    raw, _, ref = layouts
    src = tmp_path / "pq"
    if split:  # several files per folder, several batches per file, several event row groups
        src = tmp_path / "pq_split"
        write_parquet_layout(raw, src, emb_dims=EMB_DIMS, rows_per_file=2)
        assert len(list((src / "seq").glob("*.parquet"))) == 2
        monkeypatch.setattr(tp, "BATCH_ROWS", 1)
        monkeypatch.setattr(tp, "BATCH_EVENTS", 3)
    figures = read_parquet_layout(src, tmp_path / "out", mm_feats=MM, emb_dims=EMB_DIMS)
    _same_outputs(tmp_path / "ref", tmp_path / "out")
    assert figures == ref
    assert figures["candidates_cold"] == 2 and figures["items_with_pool"] == 10
    assert figures["mm_81_unknown_creative"] == 1  # 123456 is neither in the indexer nor the pool
    items = pq.read_table(tmp_path / "out" / PreparedTGR.ITEMS)
    assert items.column("creative_id").to_pylist()[9:] == [8888, 9999]  # pool-only items after the indexer's
    mask = np.load(tmp_path / "out" / PreparedTGR.mm_mask("81"))
    assert mask.tolist() == [False, True, True, True, False, False, False, False, False, False, True]


def test_eval_side_from_platform_files(layouts, tmp_path: Path) -> None:
    """Without predict_seq/ and candidate/, the platform layout's predict_seq.jsonl / predict_set.jsonl serve."""
    src = tmp_path / "pq"
    shutil.rmtree(src / "predict_seq")
    shutil.rmtree(src / "candidate")
    for name in ("predict_seq.jsonl", "predict_set.jsonl"):
        shutil.copy(tmp_path / "platform" / name, src / name)
    figures = read_parquet_layout(src, tmp_path / "out", mm_feats=MM, emb_dims=EMB_DIMS)
    _same_outputs(tmp_path / "ref", tmp_path / "out")
    assert figures == layouts[2]


def test_reid_disagreeing_with_indexer_is_counted(layouts, tmp_path: Path) -> None:
    folder = tmp_path / "pq" / "candidate"
    table = pq.read_table(folder / "part-00000.parquet")
    reid = table.column("reid_creative_id").to_pylist()
    table = table.set_column(1, "reid_creative_id", pa.array([reid[0] + 1, *reid[1:]], pa.int64()))
    _rewrite(folder, table)
    figures = read_parquet_layout(tmp_path / "pq", tmp_path / "out", mm_feats=MM, emb_dims=EMB_DIMS)
    assert figures.pop("candidates_reid_mismatch") == 1
    _same_outputs(tmp_path / "ref", tmp_path / "out")  # the indexer decides
    assert figures == layouts[2]


def _rewrite(folder: Path, table: pa.Table) -> None:
    for p in folder.glob("*.parquet"):
        p.unlink()
    pq.write_table(table, folder / "part-00000.parquet")


def _seq(
    users: list[int], seqs: list[list[tuple[int, int, int]]], user_type: pa.DataType | None = None
) -> pa.Table:
    st = pa.struct([("item_id", pa.int64()), ("action_type", pa.int64()), ("timestamp", pa.int64())])
    rows = [[dict(zip(tp.SEQ_FIELDS, e, strict=True)) for e in s] for s in seqs]
    return pa.table(
        {"user_id": pa.array(users, user_type or pa.int64()), "seq": pa.array(rows, pa.list_(st))}
    )


def test_user_ids_from_the_column_not_row_order(layouts, tmp_path: Path) -> None:
    src = tmp_path / "pq"
    # users out of order, events out of time order within a user, one item outside the indexer, an empty row
    _rewrite(src / "seq", _seq([3, 1, 4, 2], [[(5, 0, 30), (6, 1, 10), (99, 0, 20)], [(1, 0, 7), (2, 1, 7)], [], [(3, 2, 1)]]))  # fmt: skip
    _rewrite(src / "predict_seq", _seq([4, 1, 77], [[(1, 0, 5)], [], [(2, 0, 6)]]))
    # 1 unknown item in 6 events: tiny data, so the unknown-item share is allowed explicitly
    figures = read_parquet_layout(src, tmp_path / "out", mm_feats=(), max_unknown_item_share=0.2)
    ev = pq.read_table(tmp_path / "out" / PreparedTGR.EVENTS).to_pydict()
    assert ev["user"] == [3, 3, 3, 1, 1, 2]
    assert ev["item"] == [6, 0, 5, 1, 2, 3]  # time-ordered within a user, stable for equal times
    assert ev["ts"] == [10, 20, 30, 7, 7, 1]
    assert figures["events_unknown_item"] == 1 and figures["training_users"] == 4
    pu = pq.read_table(tmp_path / "out" / PreparedTGR.PREDICT_USERS).to_pydict()
    assert pu == {"user": [4, 1, 77], "raw_user_id": ["ud", "ua", "77"], "known": [True, True, False]}
    assert figures["predict_users_unknown"] == 1
    pe = pq.read_table(tmp_path / "out" / PreparedTGR.PREDICT_EVENTS).to_pydict()
    assert pe["user"] == [4, 77] and pe["item"] == [1, 2]


def _expect(src: Path, out: Path, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_parquet_layout(src, out, mm_feats=MM, emb_dims=EMB_DIMS)


def test_unknown_action_names_file_and_row(layouts, tmp_path: Path) -> None:
    src = tmp_path / "pq"
    _rewrite(src / "seq", _seq([1, 2], [[(1, 0, 1)], [(2, 0, 1), (3, 7, 2)]]))
    _expect(src, tmp_path / "out", r"seq/part-00000\.parquet row 1 \(user_id 2\): unknown action_type 7")
    assert not (tmp_path / "out" / PreparedTGR.EVENTS).exists()  # nothing half-written


def test_wrong_embedding_length(layouts, tmp_path: Path) -> None:
    folder = tmp_path / "pq" / "mm_emb" / "emb_81_32_parquet"
    emb = pa.array([[0.5] * 32, [0.5] * 31], pa.list_(pa.float32()))
    _rewrite(folder, pa.table({"anonymous_cid": pa.array(["1007", "1014"]), "emb": emb}))
    _expect(tmp_path / "pq", tmp_path / "out", r"part-00000\.parquet row 1: anonymous_cid 1014 has an embedding of length 31, expected 32")  # fmt: skip


def test_missing_embedding_folder_hints_at_dimension(layouts, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"emb_82_1024_parquet: folder not found.*found emb_82_4_parquet"):
        read_parquet_layout(tmp_path / "pq", tmp_path / "out", mm_feats=("82",))


def test_candidate_without_creative_id(layouts, tmp_path: Path) -> None:
    folder = tmp_path / "pq" / "candidate"
    table = pq.read_table(folder / "part-00000.parquet").drop_columns(["creative_id"])
    _rewrite(folder, table)
    _expect(
        tmp_path / "pq", tmp_path / "out", r"candidate/part-00000\.parquet: missing column\(s\) creative_id"
    )


def test_string_user_id(layouts, tmp_path: Path) -> None:
    src = tmp_path / "pq"
    _rewrite(src / "seq", _seq(["1", "2"], [[(1, 0, 1)], [(2, 0, 1)]], user_type=pa.string()))
    _expect(src, tmp_path / "out", r"seq/part-00000\.parquet: column 'user_id' must be integer .*got string")


def test_bad_seq_struct_type(layouts, tmp_path: Path) -> None:
    src = tmp_path / "pq"
    _rewrite(src / "seq", pa.table({"user_id": pa.array([1], pa.int64()), "seq": pa.array([[1, 2]])}))
    _expect(src, tmp_path / "out", r"column 'seq' must be list<struct<item_id int64")


def test_empty_seq_folder(layouts, tmp_path: Path) -> None:
    for p in (tmp_path / "pq" / "seq").glob("*.parquet"):
        p.unlink()
    _expect(tmp_path / "pq", tmp_path / "out", r"seq: no \*\.parquet files")


def test_seq_file_without_rows(layouts, tmp_path: Path) -> None:
    src = tmp_path / "pq"
    _rewrite(src / "seq", _seq([], []))
    _expect(src, tmp_path / "out", r"seq: no rows in 1 parquet file")


def test_eval_side_needs_predict_seq(layouts, tmp_path: Path) -> None:
    src = tmp_path / "pq"
    for p in (src / "predict_seq").glob("*.parquet"):
        p.unlink()
    (src / "predict_seq").rmdir()
    _expect(src, tmp_path / "out", r"predict_seq: folder not found; the eval side needs .*predict_seq\.jsonl")


def test_non_digit_candidate_id(layouts, tmp_path: Path) -> None:
    folder = tmp_path / "pq" / "candidate"
    table = pq.read_table(folder / "part-00000.parquet")
    table = table.set_column(0, "creative_id", pa.array(["1014", "abc", "1035", "8888", "1049"]))
    _rewrite(folder, table)
    _expect(
        tmp_path / "pq",
        tmp_path / "out",
        r"candidate/part-00000\.parquet row 1: column 'creative_id' holds 'abc'",
    )


# ---- the release as published: a training folder and an evaluation folder ------------------------------
@pytest.mark.parametrize("how", ["detected", "eval_dir", "split"])
def test_two_folder_release_matches_platform_reader(layouts, tmp_path: Path, monkeypatch, how: str) -> None:
    """train/ (seq, item_feat, user_feat, mm_emb, indexer.pkl) + eval/ (seq = the predict users, candidate,
    its own item_feat, user_feat, mm_emb, indexer.pkl): the same prepared tables as the platform layout."""
    raw, _, ref = layouts
    rel = tmp_path / "release"
    write_parquet_layout(
        raw, rel, emb_dims=EMB_DIMS, two_folders=True, rows_per_file=2 if how == "split" else None
    )
    assert sorted(p.name for p in (rel / "eval").iterdir()) == [
        "candidate", "indexer.pkl", "item_feat", "mm_emb", "seq", "user_feat"
    ]  # fmt: skip
    assert not (rel / "train" / "candidate").exists() and not (rel / "eval" / "predict_seq").exists()
    if how == "split":
        monkeypatch.setattr(tp, "BATCH_ROWS", 1)
    kw = {"eval_dir": rel / "eval"} if how == "eval_dir" else {}
    root = rel / "train" if how == "eval_dir" else rel
    figures = read_parquet_layout(root, tmp_path / "out", mm_feats=MM, emb_dims=EMB_DIMS, **kw)
    _same_outputs(tmp_path / "ref", tmp_path / "out")
    assert figures == ref


def test_eval_folder_fills_pool_only_embeddings(layouts, tmp_path: Path) -> None:
    """A vector only the evaluation folder's mm_emb/ has (a pool-only item) is read; training rows win."""
    raw, _, ref = layouts
    rel = tmp_path / "release"
    write_parquet_layout(raw, rel, emb_dims=EMB_DIMS, two_folders=True)
    folder = rel / "train" / "mm_emb" / "emb_81_32_parquet"
    table = pq.read_table(folder / "part-00000.parquet")
    keep = [c != "9999" for c in table.column("anonymous_cid").to_pylist()]  # 9999: only in the pool
    _rewrite(folder, table.filter(pa.array(keep)))
    read_parquet_layout(rel, tmp_path / "out", mm_feats=MM, emb_dims=EMB_DIMS)
    _same_outputs(tmp_path / "ref", tmp_path / "out")


def test_two_indexers_must_agree(layouts, tmp_path: Path) -> None:
    raw, _, _ = layouts
    rel = tmp_path / "release"
    write_parquet_layout(raw, rel, emb_dims=EMB_DIMS, two_folders=True)
    idx = pickle.loads((rel / "eval" / "indexer.pkl").read_bytes())
    idx["i"][1007], idx["i"][1014] = idx["i"][1014], idx["i"][1007]
    (rel / "eval" / "indexer.pkl").write_bytes(pickle.dumps(idx))
    _expect(rel, tmp_path / "out", r"eval/indexer\.pkl 'i': creative id 1007 has re-id 2, but .*train/indexer\.pkl "
            r"gives it 1; the training and evaluation folders' indexers must agree")  # fmt: skip
    assert not (tmp_path / "out" / PreparedTGR.EVENTS).exists()


def test_eval_indexer_may_add_users_but_not_reuse_a_reid(layouts, tmp_path: Path) -> None:
    raw, _, _ = layouts
    rel = tmp_path / "release"
    write_parquet_layout(raw, rel, emb_dims=EMB_DIMS, two_folders=True)
    idx = pickle.loads((rel / "eval" / "indexer.pkl").read_bytes())
    idx["u"]["uf"] = 6  # a user only the evaluation side knows: fine
    (rel / "eval" / "indexer.pkl").write_bytes(pickle.dumps(idx))
    _rewrite(rel / "eval" / "seq", _seq([6, 2], [[(1, 0, 5)], [(2, 1, 6)]]))
    figures = read_parquet_layout(rel, tmp_path / "out", mm_feats=())
    pu = pq.read_table(tmp_path / "out" / PreparedTGR.PREDICT_USERS).to_pydict()
    assert (
        pu == {"user": [6, 2], "raw_user_id": ["uf", "ub"], "known": [True, True]} and figures["users"] == 6
    )
    del idx["u"]["uc"]  # the evaluation side need not list every training user ...
    idx["u"]["ug"] = 3  # ... but a new raw id on a re-id the training side gave another user is an error
    (rel / "eval" / "indexer.pkl").write_bytes(pickle.dumps(idx))
    _expect(
        rel,
        tmp_path / "out2",
        r"eval/indexer\.pkl 'u': user \(with train/indexer\.pkl\) ids 'uc', 'ug' all map to re-id 3",
    )


def test_release_folders_not_found(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "rel" / name / "seq").mkdir(parents=True)
    _expect(
        tmp_path / "rel", tmp_path / "out", r"rel: no parquet release here: .*found a/ \(seq/\), b/ \(seq/\)"
    )
    with pytest.raises(DataError, match=r"b/candidate: folder not found; data\.eval_dir must be"):
        tp.release_folders(tmp_path / "rel" / "a", tmp_path / "rel" / "b")
