from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from recstack.config import SyntheticConfig
from recstack.data.builders.synthetic import _alias_tables, _draw, build_mmctr_synthetic, write_covers
from recstack.data.raw.mmctr import read_mmctr_raw, write_mmctr_raw
from recstack.paths import RawMmctr

from conftest import FIXTURES as _SHARED
from conftest import needs_fixtures

FIXTURES = _SHARED / "microlens_100k"
CFG = SyntheticConfig(
    users=200, items=300, samples_per_user=6, hist_len=16, txt_dim=32, img_dim=48, image_size=16
)


@pytest.fixture(scope="module")
def built():
    return build_mmctr_synthetic(CFG, FIXTURES)


def _arrays(raw, truth) -> dict[str, np.ndarray]:
    out = {f"truth.{k}": v for k, v in vars(truth).items()}
    for name in ("train", "valid", "test"):
        out |= {f"{name}.{k}": v for k, v in vars(raw.split(name)).items() if v is not None}
    it = raw.items
    out |= {"tags": it.tags, "title": it.title, "likes": it.likes_level, "views": it.views_level}
    out |= {f"emb.{k}": v for k, v in it.emb.items()} | {f"mask.{k}": v for k, v in it.emb_mask.items()}
    return out


def test_deterministic_for_a_seed(built):
    a = _arrays(*built)
    b = _arrays(*build_mmctr_synthetic(CFG, FIXTURES))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = _arrays(*build_mmctr_synthetic(replace(CFG, seed=CFG.seed + 1), FIXTURES))
    assert not np.array_equal(a["train.item_id"], c["train.item_id"])
    assert not np.array_equal(a["emb.item_emb_d128"], c["emb.item_emb_d128"])


def test_shapes_dtypes_and_padding(built):
    raw, truth = built
    u, s, w, n_items = CFG.users, CFG.samples_per_user, CFG.hist_len, CFG.items
    assert (len(raw.train), len(raw.valid), len(raw.test)) == (u * (s - 2), u, u)
    for name in ("train", "valid", "test"):
        sp = raw.split(name)
        assert sp.item_seq.shape == (len(sp), w) and sp.item_seq.dtype == np.int64
        for col in (sp.user_id, sp.item_id, sp.likes_level, sp.views_level):
            assert col.dtype == np.int64 and col.shape == (len(sp),)
        assert sp.user_id.min() == 1 and sp.user_id.max() == u
        assert sp.item_id.min() >= 1 and sp.item_id.max() <= n_items and sp.item_seq.max() <= n_items
        assert sp.likes_level.min() >= 0 and sp.likes_level.max() <= 9
        filled = sp.item_seq > 0  # left-padded: once a row starts, it never has a 0 again
        assert (np.diff(filled.astype(int), axis=1) >= 0).all() and filled[:, -1].all()
    assert raw.test.label is None and raw.train.label.dtype == np.float32
    np.testing.assert_array_equal(raw.test.ids, np.arange(u))
    assert set(np.unique(raw.train.label)) <= {0.0, 1.0}
    # a user's rows are in time order: each history is the previous one shifted by one click
    seq = raw.train.item_seq.reshape(u, s - 2, w)
    np.testing.assert_array_equal(seq[:, 1:, :-1], seq[:, :-1, 1:])
    np.testing.assert_array_equal(raw.valid.item_seq[:, :-1], seq[:, -1, 1:])
    # item side: row 0 is padding
    it = raw.items
    assert len(it) == n_items + 1 and it.tags.shape == (n_items + 1, 5) and it.title[0] == ""
    assert (it.tags[0] == 0).all() and (it.tags[1:, -1] >= 1).all() and it.tags.max() <= CFG.topics
    assert (np.diff((it.tags[1:] > 0).astype(int), axis=1) >= 0).all()  # tags left-padded too
    assert all(isinstance(t, str) and t for t in it.title[1:])
    dims = {"item_emb_d128": 128, "txt_emb_BERT": CFG.txt_dim, "img_emb_CLIPRN50": CFG.img_dim}
    for name, dim in dims.items():
        e, m = it.emb[name], it.emb_mask[name]
        assert e.shape == (n_items + 1, dim) and e.dtype == np.float32 and m.dtype == bool
        assert not m[0] and (e[~m] == 0).all() and m[1:].mean() > 0.9
    assert it.emb_mask["item_emb_d128"][1:].all()
    assert truth.item_topic.shape == (n_items + 1,) and truth.item_topic[0] == -1
    assert truth.test_label.dtype == np.float32 and len(truth.test_label) == u
    np.testing.assert_array_equal(truth.test_user, raw.test.user_id)


def test_positive_rate(built):
    raw, truth = built
    for labels in (raw.train.label, raw.valid.label, truth.test_label):
        assert 0.15 < labels.mean() < 0.35


def test_round_trip_through_files(built, tmp_path):
    raw, truth = built
    write_mmctr_raw(raw, tmp_path)
    write_covers(truth.cover_topic, RawMmctr(tmp_path).item_images, CFG.image_size, CFG.seed)
    back = read_mmctr_raw(tmp_path)
    a, b = _arrays(raw, truth), _arrays(back, truth)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(back.image_ids, np.arange(1, CFG.items + 1))
    np.testing.assert_array_equal(raw.image_ids, back.image_ids)
    with Image.open(RawMmctr(tmp_path).item_images / "1.jpg") as img:
        assert img.size == (CFG.image_size, CFG.image_size) and img.mode == "RGB"


def test_label_follows_topic_affinity(built):
    raw, truth = built
    topic, s = truth.item_topic, raw.train
    same = (topic[s.item_seq] == topic[s.item_id][:, None]) & (s.item_seq > 0)
    share = same.sum(1) / np.maximum((s.item_seq > 0).sum(1), 1)  # target topic's share of the history
    assert roc_auc_score(s.label, share) > 0.6


def test_embeddings_cluster_by_topic(built):
    raw, truth = built
    for name, e in raw.items.emb.items():
        m = raw.items.emb_mask[name]
        x, y = e[m], truth.item_topic[m]
        centroids = np.stack([x[y == t].mean(0) for t in range(CFG.topics)])
        nearest = ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        assert (nearest == y).mean() > 0.5, name  # chance is 1 / topics


def test_covers_show_their_topic(built, tmp_path):
    _, truth = built
    write_covers(truth.cover_topic, tmp_path, size=16, seed=3)
    ids = np.arange(1, CFG.items + 1)
    mean_rgb = np.stack([np.asarray(Image.open(tmp_path / f"{i}.jpg"), np.float32).mean((0, 1)) for i in ids])
    y = truth.cover_topic[ids]
    centroids = np.stack([mean_rgb[y == t].mean(0) for t in range(CFG.topics)])
    nearest = ((mean_rgb[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == y).mean() > 0.6
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_titles_without_fixtures_change_nothing_else(built):
    raw, truth = built
    raw2, truth2 = build_mmctr_synthetic(CFG, None)
    a, b = _arrays(raw, truth), _arrays(raw2, truth2)
    for k in a:
        if k != "title":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert raw2.items.title[0] == "" and all(t for t in raw2.items.title[1:])


@needs_fixtures
def test_titles_are_real_microlens_titles(built):
    """Real MicroLens titles, tagged with the topic's real tag (was an `if FIXTURES.is_dir()` that could drop it)."""
    raw, _ = built
    real = {line.partition(",")[2].strip() for line in (FIXTURES / "MicroLens-100k_title_en.csv").open()}
    assert np.mean([t.rsplit(" #", 1)[0] in real or t in real for t in raw.items.title[1:]]) > 0.95


def test_alias_draws_follow_weights():
    rng = np.random.default_rng(0)
    weight, group = rng.random(20) ** 3 + 1e-3, np.repeat([0, 1], 10)
    draws = _draw(_alias_tables(weight, group), np.ones(200_000, np.int64), rng) - 1
    freq = np.bincount(draws, minlength=20) / len(draws)
    expected = np.where(group == 1, weight, 0) / weight[group == 1].sum()
    np.testing.assert_allclose(freq, expected, atol=0.005)


def test_bad_config_is_an_error():
    with pytest.raises(ValueError, match="samples_per_user"):
        build_mmctr_synthetic(replace(CFG, samples_per_user=2))
