"""The tencentgr sequence retriever: causality, the losses against hand-computed values, logQ, the cold-item
path, search against brute force, resume after an interruption, and the stage end to end on tiny data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from recstack.config import ConfigError, SeqrecConfig, load_config
from recstack.data.raw.tencentgr_platform import write_platform
from recstack.data.tables.predictions import COLUMNS, read_ranking
from recstack.data.tables.tgr_prepared import (
    before_cuts,
    group_bounds,
    pool_items,
    read_events,
    read_table,
    stack_queries,
)
from recstack.device import deterministic_mode
from recstack.models.item_encoder import ItemColumns, ItemEncoder
from recstack.models.seqrec import SeqRec, UserTower
from recstack.paths import Paths, Predictions, PreparedTGR, Seqrec
from recstack.pipeline import run_until
from recstack.retrieve.index import VectorIndex, search_excluding
from recstack.tracks.tencentgr.seqrec import mips
from recstack.train import seqrec as tr

from conftest import ROOT
from tgr_helpers import tiny_tgr


def tiny_model(n_items: int = 12, dim: int = 8, next_action: bool = True, mm: bool = True) -> SeqRec:
    torch.manual_seed(0)
    id_index = torch.tensor([0, *range(1, n_items - 2), 0, 0])  # the last two items: unseen in training
    feats = {"i100": torch.randint(1, 4, (n_items,)), "i101": torch.randint(1, 4, (n_items,))}
    mats = {"emb_81": torch.randn(n_items, 5)} if mm else {}
    users = UserTower(torch.randint(0, 3, (4, 2)), torch.randint(0, 3, (4, 1, 3)), dim, 0.5)
    items = ItemEncoder(ItemColumns(id_index, sparse=feats, multimodal=mats), dim, "project", 0.5)
    return SeqRec(items, users, dim, 2, 2, 6, 0.0, next_action, 0.5).eval()


def batch(model: SeqRec, b: int = 3, n: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[0, :2] = False  # left padding
    return {"user": torch.randint(0, 4, (b,), generator=g),
            "item": torch.randint(1, model.items.n_items, (b, n), generator=g) * valid,
            "action": torch.randint(0, 3, (b, n), generator=g) * valid,
            "gap": torch.randint(0, 10, (b, n), generator=g) * valid, "valid": valid}  # fmt: skip


@torch.no_grad()
def test_a_position_never_sees_later_events():
    model = tiny_model()
    x = batch(model)
    h = model(**x)
    for col in ("item", "action", "gap"):
        y = {k: v.clone() for k, v in x.items()}
        y[col][:, 4] = (y[col][:, 4] + 1) % 3 + 1  # change event 4 of every row
        h2 = model(**y)
        assert torch.allclose(h[:, :4], h2[:, :4], atol=1e-6)  # earlier positions unchanged
        assert not torch.allclose(h[:, 4:], h2[:, 4:])  # event 4 and later see it
    # padded positions do not leak into real ones: changing a padded token changes nothing real
    y = {k: v.clone() for k, v in x.items()}
    y["item"][0, :2] = 5
    assert torch.allclose(model(**y)[0, 2:], h[0, 2:], atol=1e-6)
    assert torch.isfinite(h).all()


def test_infonce_equals_a_hand_computed_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pos = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    neg = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 3.0]])
    pos_id, neg_id = torch.tensor([7, 8]), torch.tensor([3, 4, 8])  # neg 8 = row 1's positive: masked there
    w, t = torch.tensor([1.0, 2.5]), 0.5
    got = tr.infonce_loss(q, pos, neg, pos_id, neg_id, None, None, w, t).item()
    r2 = 1 / math.sqrt(2)
    row0 = -(r2 / t) + math.log(math.exp(r2 / t) + math.exp(1 / t) + math.exp(-r2 / t) + math.exp(0))
    row1 = -(1 / t) + math.log(math.exp(1 / t) + math.exp(0) + math.exp(r2 / t))  # neg 8 left out
    assert got == pytest.approx((row0 + 2.5 * row1) / 3.5, rel=1e-6)
    # bce: dot products, one negative per position
    b = tr.bce_loss(q, pos, neg[:2], w).item()
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 (softplus)
    want = (sp(-1.0) + sp(1.0) + 2.5 * (sp(-2.0) + sp(2.0))) / 3.5
    assert b == pytest.approx(want, rel=1e-6)


def test_full_softmax_equals_cross_entropy_over_the_catalogue_with_seen_items_left_out():
    model = tiny_model(mm=False)
    n = model.items.n_items
    item = torch.tensor([[0, 3, 5, 3, 7], [2, 4, 6, 8, 9]])  # row 0: one padded slot; item 3 seen twice
    store = tr.EventStore(torch.cat([item.flatten(), torch.tensor([1])]).int(),
                          torch.ones(11, dtype=torch.int8), torch.zeros(11, dtype=torch.int8))  # fmt: skip
    valid = item > 0
    b = {"user": torch.tensor([1, 2]), "item": item, "action": torch.ones_like(item), "gap": torch.zeros_like(item),
         "valid": valid, "next": torch.arange(10).view(2, 5) + 1}  # fmt: skip
    drawable, t = torch.arange(1, n), 0.2
    weights = torch.tensor([0.0, 1.0, 2.5])
    rate = torch.full((n,), 1.0 / (n - 1))
    rate[0] = 0
    for mask_seen in (False, True):
        c = SeqrecConfig(temperature=t, full_softmax_items=n, mask_seen=mask_seen, logq=True)
        s = tr.SeqTrainSettings(c, exclude_seen=True, seed=2025)
        g = torch.Generator().manual_seed(0)
        got = tr.batch_loss(model, store, b, weights, rate, rate, drawable, g, s).item()
        with torch.no_grad():
            h = F.normalize(
                model(b["user"], item, b["action"], b["gap"], valid, torch.ones_like(item)), dim=-1
            )
            v = F.normalize(model.item_table(), dim=-1)
        want, rows = 0.0, 0
        for r in range(2):
            for p in range(5):
                if not valid[r, p]:
                    continue
                target = int(store.item[b["next"][r, p]])
                keep = [
                    i
                    for i in range(1, n)
                    if i == target or not (mask_seen and i in item[r, : p + 1].tolist())
                ]
                logits = h[r, p] @ v[keep].T / t  # no logQ: every item is a candidate exactly once
                want += float(torch.logsumexp(logits, 0) - logits[keep.index(target)])
                rows += 1
        assert got == pytest.approx(want / rows, rel=1e-5), mask_seen
    # the seen mask: position p of a window has seen its own events up to p, padding never
    seen = tr.seen_in_window(item, valid, torch.tensor([3, 7, 0]))
    assert seen[0, :, 0].tolist() == [False, True, True, True, True]
    assert seen[0, :, 1].tolist() == [False, False, False, False, True] and not seen[:, :, 2].any()


def test_warmup_then_cosine_decay_over_the_remaining_steps():
    f = [tr.lr_factor(t, 10, 110) for t in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[10] == 1.0  # the peak is reached
    assert f[60] == pytest.approx(0.5) and f[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))


def test_logq_subtracts_each_candidates_log_sampling_rate():
    q = pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # every candidate scores the same cosine
    lq_pos, lq_neg = torch.tensor([math.log(0.1)]), torch.tensor([math.log(0.4), math.log(0.1)])
    got = tr.infonce_loss(q, pos, neg, torch.tensor([1]), torch.tensor([2, 3]), lq_pos, lq_neg,
                          torch.ones(1), 0.1).item()  # fmt: skip
    # logits 10 - log q: the popular negative (0.4) is discounted; loss = log(1 + 0.1/0.4 + 0.1/0.1)
    assert got == pytest.approx(math.log(1 + 0.25 + 1.0), rel=1e-6)
    assert tr.infonce_loss(q, pos, neg, torch.tensor([1]), torch.tensor([2, 3]), None, None,
                           torch.ones(1), 0.1).item() == pytest.approx(math.log(3), rel=1e-6)  # fmt: skip
    rates = tr.sampling_rates(np.array([0, 3.0, 1.0, 0, 0]), np.array([0, 1, 1, 1, 1.0]), 0.2)
    assert rates.sum() == pytest.approx(1) and rates[0] == 0  # padding row never drawn
    assert rates[3] == pytest.approx(0.05) and rates[1] == pytest.approx(0.8 * 0.75 + 0.05)  # cold items too


@torch.no_grad()
def test_an_item_unseen_in_training_is_encoded_from_features_and_vectors():
    model = tiny_model()
    cold = torch.tensor([10, 11])  # id index 0
    v = model.item_vectors(cold)
    assert torch.isfinite(v).all() and not torch.allclose(v[0], v[1])  # different features / vectors
    model.items.id_emb.weight.add_(1.0)  # id rows change ...
    model.items.id_emb.weight[0].zero_()  # ... except the padding row that unseen items use
    assert torch.allclose(model.item_vectors(cold), v)
    model.items.mm0[10] += 1.0  # its multimodal vector moves it
    assert not torch.allclose(model.item_vectors(cold)[0], v[0])
    assert torch.allclose(model.item_table()[cold], model.item_vectors(cold), atol=1e-6)  # table == per id


def test_search_equals_brute_force_with_and_without_the_seen_filter():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    ids = np.arange(100, 150)
    q = rng.normal(size=(7, 8)).astype(np.float32)
    seen = [rng.choice(ids, 5, replace=False) for _ in range(7)]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    vn = items / np.linalg.norm(items, axis=1, keepdims=True)
    idx = VectorIndex(items, ids=ids)
    for excl in (None, seen):
        brute = tr.brute_topk(torch.tensor(qn), torch.tensor(vn), torch.tensor(ids), 10, excl)
        assert np.array_equal(search_excluding(idx, q, 10, excl)[1], brute)
        if excl is not None:
            assert not any(np.isin(b, s).any() for b, s in zip(brute, seen, strict=True))
    # the bce recipe ranks by dot product: cosine on mips(items) with the query padded by 0 does the same
    dot = tr.brute_topk(torch.tensor(q), torch.tensor(items), torch.tensor(ids), 10, None)
    _, got = VectorIndex(mips(items), ids=ids).search(np.pad(q, ((0, 0), (0, 1))), 10)
    assert np.array_equal(got, dot)


def test_windows_make_every_event_after_the_first_a_target_once():
    start, end = np.array([0, 5, 6]), np.array([5, 6, 14])  # users of 5, 1 and 8 events; max_len 3
    w = tr.train_windows(start, end, np.array([1, 2, 3]), 3, torch.device("cpu"))
    store = tr.EventStore(torch.arange(14, dtype=torch.int32), torch.ones(14, dtype=torch.int8),
                          torch.zeros(14, dtype=torch.int8))  # fmt: skip
    b = tr.gather(store, w, torch.arange(len(w)), 3)
    targets = sorted(b["next"][b["valid"]].tolist())
    assert targets == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13]
    assert (b["item"][b["valid"]] + 1 == b["next"][b["valid"]]).all()  # each input's target is the next


def test_joined_stores_keep_each_part_and_its_own_first_gap():
    a = tr.EventStore.of(
        np.array([1, 1]), np.array([3, 4]), np.array([1, 2]), np.array([10, 20]), torch.device("cpu")
    )
    b = tr.EventStore.of(
        np.array([1, 1]), np.array([5, 6]), np.array([0, 1]), np.array([100, 900]), torch.device("cpu")
    )
    j = tr.EventStore.cat(a, b)  # the same user id on both sides: b's first event is still nobody's next
    assert j.item.tolist() == [3, 4, 5, 6] and j.action.tolist() == [1, 2, 0, 1]
    assert j.gap.tolist() == [0, 1 + int(math.log2(11)), 0, 1 + int(math.log2(801))]
    w = tr.Windows.cat(tr.query_windows([0], [2], [1], torch.device("cpu")),
                       tr.query_windows([2], [4], [0], torch.device("cpu")))  # fmt: skip
    assert w.start.tolist() == [0, 2] and w.end.tolist() == [2, 4] and w.user.tolist() == [1, 0]


def _toy(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_users, n_items = 12, 15
    user = np.repeat(np.arange(1, n_users + 1), 9)
    item = np.concatenate([(np.arange(9) + u) % (n_items - 1) + 1 for u in range(n_users)])
    action = rng.choice([0, 1, 2], len(user), p=[0.3, 0.5, 0.2])
    ts = np.cumsum(rng.integers(1, 5000, len(user)))
    return user, item, action, ts, n_items


# CUDA too where this machine has it (no skip either way: the list holds the devices present)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _fit(tmp_path, on_step=None, min_steps: int = 12, eval_every: int = 5, device: str = "cpu"):
    user, item, action, ts, n_items = _toy()
    start = np.arange(0, len(user), 9)
    dev = torch.device(device)
    store = tr.EventStore.of(user, item, action, ts, dev)
    train = tr.train_windows(start, start + 8, np.zeros(12, np.int64), 4, dev)
    valid = tr.query_windows(start, start + 8, np.zeros(12, np.int64), dev)
    model = tiny_model(n_items, mm=False).to(dev)
    counts = np.bincount(item, minlength=n_items).astype(float)
    c = SeqrecConfig(batch_size=4, min_steps=min_steps, epochs=1, eval_every=eval_every, negatives=6, inbatch=4,
                     max_len=4, progress=False, warmup=2, patience=99, lr=1e-3)  # fmt: skip
    s = tr.SeqTrainSettings(c, exclude_seen=True, seed=2025, resume=tmp_path / "ck.pt", resume_key="k")
    model.train()
    model.drop.p = 0.1  # dropout draws must repeat after a resume too
    res = tr.fit(model, store, train, valid, item[start + 8], np.ones(12), torch.arange(1, n_items, device=dev), counts / counts.sum(),
                 tr.sampling_rates(counts, (np.arange(n_items) > 0).astype(float), 0.1), s, on_step)  # fmt: skip
    return model, res


def test_eval_every_0_evaluates_about_ten_times_whatever_the_epoch(tmp_path):
    """3 steps per epoch here: "once per epoch" would be every 3 steps; auto is total / 10, whatever the size
    (a 1,000-step floor on a small download was one evaluation at the end)."""
    _, res = _fit(tmp_path, min_steps=40, eval_every=0)
    assert [r["step"] for r in res.curve] == list(range(4, 41, 4))


@pytest.mark.parametrize("device", DEVICES)
def test_resume_after_an_interrupted_epoch_gives_the_same_result(tmp_path, device):
    """On CUDA under `deterministic=true` (device.deterministic_mode): the embedding backward's atomic adds
    are otherwise free to sum in any order."""
    with deterministic_mode(device == "cuda"):
        full, r_full = _fit(tmp_path / "a", device=device)

        def boom(step: int) -> None:
            if step == 7:  # between the evaluations after steps 5 and 10
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            _fit(tmp_path / "b", boom, device=device)
        assert (tmp_path / "b" / "ck.pt").is_file()
        resumed, r_res = _fit(tmp_path / "b", device=device)
    assert [r["step"] for r in r_res.curve] == [5, 10, 12]
    assert r_res.curve == r_full.curve or all(
        a["valid_score"] == b["valid_score"] for a, b in zip(r_res.curve, r_full.curve, strict=True)
    )
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


TINY = ("data.mm_feats=['81','82']", "data.emb_dims={'82': 8}", "data.valid_users=2", "data.stack_users=2",
        "seqrec.dim=8", "seqrec.heads=2", "seqrec.layers=1", "seqrec.min_steps=6", "seqrec.batch_size=4",
        "seqrec.eval_every=3", "seqrec.negatives=8", "seqrec.inbatch=8", "seqrec.progress=false",
        "seqrec.topk=10", "embed.dim=8", "embed.text.enabled=false", "embed.probe=false")  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("seqrec.loss=bce", "seqrec.multimodal=provided"),
        ("seqrec.negatives=64", "seqrec.next_action=false", "seqrec.id_dropout=0.3"),
        ("seqrec.train_predict=false",),
    ],
)  # sampled negatives + logQ; the official recipe; the exact softmax (21 items fit 64 + 8 negatives)
def test_stage_end_to_end_on_tiny_tencentgr(tmp_cfg, extra):
    cfg = tmp_cfg("tencentgr_real.yaml", *TINY, *extra)
    write_platform(tiny_tgr(), Paths(cfg).raw_dir, {"82": 8})
    run_until(cfg, "seqrec")
    prep, out = Paths(cfg).stage_dir("prepare"), Paths(cfg).stage_dir("seqrec")
    ev = read_events(prep)
    valid = read_table(prep, PreparedTGR.VALID)
    stack = stack_queries(ev, valid, 2, cfg.seed)
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    pool = pool_items(prep)
    for split, rows in (("train", stack), ("valid", valid), ("test", pu)):
        items, scores = read_ranking(out, split, len(rows))
        assert items.shape == (len(rows), 10) and np.isin(items, pool).all()
        assert all(len(set(row)) == 10 for row in items.tolist())  # distinct pool items, always k of them
        if split != "test":  # history items only after every unseen one (the pool has 12 items)
            for r, (u, e) in enumerate(zip(rows["user"], rows["event_index"], strict=True)):
                seen = np.isin(items[r], ev["item"][(ev["user"] == u) & (np.arange(len(ev["user"])) < e)])
                assert not (np.diff(seen.astype(int)) < 0).any()
                unseen = scores[r][~seen]
                assert (np.diff(unseen) <= 1e-6).all()  # best first
    assert tuple(pq.read_table(out / Predictions.FILE).column_names) == COLUMNS  # the one scored-rows format
    metrics = json.loads((out / Seqrec.METRICS).read_text())
    assert {"valid_score", "valid_hr@10", "valid_ndcg@10", "valid_weighted_score"} <= set(metrics)
    assert metrics["multimodal"] == ("provided:81,82" if "seqrec.multimodal=provided" in extra else "embed")
    assert (out / Seqrec.CURVE).is_file() and (out / Seqrec.MODEL).is_file()
    assert not Paths(cfg).resume_dir("seqrec").exists()  # finished: the checkpoint is gone
    keep = before_cuts(ev["user"], stack["event_index"].to_numpy()) & ~np.isin(ev["user"], valid["user"])
    # seqrec.train_predict: one more window per predict user and per valid user with 2+ history events
    # (tiny_tgr: predict user 2 has 2, user 5 one); the valid users are held out whole otherwise
    users, start, _ = group_bounds(ev["user"])
    kept = np.add.reduceat(keep.astype(np.int64), start)
    own = int(((kept >= 2) * ((kept - 1 + 99) // 100)).sum())  # max_len 100: one window per user here
    on = "seqrec.train_predict=false" not in extra  # on by default
    histories = 1 + int((valid["n_hist"] >= 2).sum())
    assert metrics["train_predict"] is on and metrics["train_windows"] == own + (histories if on else 0)


@pytest.mark.parametrize(
    "override, msg",
    [("seqrec.loss=softmax", "'seqrec.loss' is 'softmax'"), ("seqrec.multimodal=x", "'seqrec.multimodal'"),
     ("seqrec.dim=10", "multiple of seqrec.heads"),
     ("seqrec.topk=5", "expected >= 10"), ("seqrec.id_dropout=1.0", "'seqrec.id_dropout' is 1.0"), ("seqrec.temp=0.1", "unknown config key 'seqrec.temp'")],
)  # fmt: skip
def test_bad_seqrec_config_is_an_error_naming_the_key(tmp_cfg, override, msg):
    with pytest.raises(ConfigError, match=msg):
        tmp_cfg("tencentgr_real.yaml", "seqrec.heads=4", override)


def test_stage_bytes_are_identical_across_two_processes(tmp_path):
    """Two separate processes (different hash seeds) on the same data write the same bytes: nothing depends
    on string hashing, and the float sums do not depend on the machine's load (seqrec.threads)."""
    out = []
    for run in ("a", "b"):
        args = [
            f"input_root={tmp_path / run / 'in'}",
            f"output_root={tmp_path / run / 'out'}",
            *TINY,
            "seqrec.multimodal=provided",
        ]  # no embed stage: prepare + seqrec only (seconds)
        cfg = load_config(ROOT / "configs" / "tencentgr_real.yaml", args)
        write_platform(tiny_tgr(), Paths(cfg).raw_dir, {"82": 8})
        env = {**os.environ, "PYTHONHASHSEED": "1" if run == "a" else "2",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        subprocess.run([sys.executable, "-m", "recstack", "seqrec", "--config", str(ROOT / "configs" / "tencentgr_real.yaml"),
                        *args], check=True, env=env, capture_output=True)  # fmt: skip
        d = Paths(cfg).stage_dir("seqrec")
        out.append([(d / f).read_bytes() for f in (Predictions.FILE, Seqrec.MODEL)])  # curve.csv: timings
    for name, a, b in zip((Predictions.FILE, Seqrec.MODEL), *out, strict=True):
        assert a == b, f"seqrec {name} differs between two processes"
