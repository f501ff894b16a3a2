"""The embed stage and its parts: text / image encoders (tiny random checkpoints saved to tmp, and the
shipped MiniLM), bad input, caching, fusion with missing modalities, behaviour alignment, the Task 1 export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    GPT2Config,
    GPT2Model,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from recstack.config import AlignConfig
from recstack.data.raw.mmctr import read_item_info
from recstack.embed.align import align, consecutive_pairs
from recstack.embed.fuse import Modality, balance, fuse, provided_modality
from recstack.embed.hf import default_text_model
from recstack.embed.image import ImageEncoder, encode_image_files
from recstack.embed.probe import knn_hit_rate
from recstack.embed.text import TextEncoder, encode_texts, pool
from recstack.errors import DataError
from recstack.paths import Embedded, Paths
from recstack.pipeline import run_stage, run_until

from conftest import FIXTURES, SMALL_SYNTH, needs_fixtures

COVERS = sorted((FIXTURES / "microlens_100k" / "covers").glob("*.jpg"))
TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder(pooling="mean", max_length=32, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Randomly initialised tiny checkpoints, written with save_pretrained: loaded like any local model."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(default_text_model())
    vocab = tok.vocab_size
    for name, model in (
        ("bert", BertModel(BertConfig(vocab_size=vocab, max_position_embeddings=64, **TINY))),
        ("gpt2", GPT2Model(GPT2Config(vocab_size=vocab, n_embd=16, n_layer=1, n_head=2, n_positions=64))),
    ):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    vision = dict(**TINY, image_size=32, patch_size=8)
    clip = CLIPModel(
        CLIPConfig(text_config={**TINY, "vocab_size": 99}, vision_config=vision, projection_dim=12)
    )
    clip.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "clip"
    )
    ViTModel(ViTConfig(**vision)).save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    return root


# ---- text ----------------------------------------------------------------------------------------------
def _plain(enc: TextEncoder, texts: list[str], how: str) -> np.ndarray:
    """The obvious version: one padded batch per slice of the input order, tokenizer padding."""
    out = []
    for s in range(0, len(texts), enc.batch_size):
        b = enc.tokenizer(texts[s : s + enc.batch_size], padding=True, truncation=True,
                          max_length=enc.max_length, return_tensors="pt")  # fmt: skip
        with torch.inference_mode():
            h = enc.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        out.append(pool(h, b["attention_mask"], how).numpy())
    return np.concatenate(out)


TEXTS = ["a", "Toy Story (1995) | Animation", "x " * 40, "the best video of my new cat", "b c", "短视频 标题"]


def test_bucketed_batches_match_plain_loop(minilm):
    got = minilm.encode(TEXTS, progress=False)
    assert got.shape == (len(TEXTS), 384)
    assert np.abs(got - _plain(minilm, TEXTS, "mean")).max() < 1e-4


@pytest.mark.parametrize("name,how", [("bert", "cls"), ("bert", "mean"), ("gpt2", "last")])
def test_poolings_on_tiny_checkpoints(tiny_models, name, how):
    enc = TextEncoder(str(tiny_models / name), pooling=how, max_length=16, batch_size=3, device="cpu")
    got = enc.encode(TEXTS, progress=False)
    assert got.shape == (len(TEXTS), 16)
    if name == "gpt2":  # no pad token in the config: last-token pooling must ignore the padding
        for i, t in enumerate(TEXTS):
            ids = enc.tokenizer(t, truncation=True, max_length=16, return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                alone = enc.model(input_ids=ids).last_hidden_state[0, -1].numpy()
            assert np.abs(got[i] - alone).max() < 1e-4
    else:
        assert np.abs(got - _plain(enc, TEXTS, how)).max() < 1e-4


def test_bad_texts_are_masked_replaced_truncated_and_counted(minilm):
    texts = ["fine title", None, "", "   ", b"caf\xe9 latte", "emoji \ud800 lone surrogate", "long " * 5000,
             float("nan"), "fine title"]  # fmt: skip
    vectors, mask, stats = encode_texts(minilm, texts)
    assert mask.tolist() == [True, False, False, False, True, True, True, False, True]
    assert (vectors[~mask] == 0).all() and (np.abs(vectors[mask]).sum(1) > 0).all()
    assert stats.empty == 4 and stats.non_utf8 == 2 and stats.truncated == 1 and stats.texts == 9
    assert np.allclose(vectors[0], vectors[-1])


def test_no_text_at_all_gives_zero_vectors(minilm):
    """Every title empty (a MicroLens download without item_feature.parquet): no tokenizer call on an empty
    batch (transformers' fast tokenizer raises IndexError there), zero vectors, nothing masked in."""
    vectors, mask, stats = encode_texts(minilm, [None, "", "  "])
    assert vectors.shape == (3, minilm.dim) and not vectors.any() and not mask.any()
    assert stats.empty == 3 and stats.encoded == 0


def test_cache_encodes_only_new_items(minilm, tmp_path):
    first, _, s1 = encode_texts(minilm, TEXTS[:4], tmp_path)
    assert (s1.cached, s1.encoded) == (0, 4)
    again, _, s2 = encode_texts(minilm, TEXTS, tmp_path)
    assert (s2.cached, s2.encoded) == (4, 2)
    assert np.abs(again[:4] - first).max() < 1e-6
    fresh = minilm.encode(TEXTS[4:], progress=False)
    assert np.abs(again[4:] - fresh).max() < 1e-4
    other = TextEncoder(pooling="cls", max_length=32, device="cpu")  # other settings: another namespace
    _, _, s3 = encode_texts(other, TEXTS, tmp_path)
    assert s3.cached == 0


def test_hub_names_are_refused():
    with pytest.raises(DataError, match="not a local Hugging Face checkpoint folder"):
        TextEncoder("sentence-transformers/all-MiniLM-L6-v2")


# ---- images --------------------------------------------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("name,dim", [("clip", 12), ("vit", 16)])
def test_image_encoder_reads_real_covers(tiny_models, tmp_path, name, dim):
    from PIL import Image

    png = tmp_path / "cover.png"
    Image.open(COVERS[0]).save(png)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(COVERS[1].read_bytes()[:200])  # truncated JPEG
    paths = [str(p) for p in COVERS] + [str(png), str(bad), None, str(tmp_path / "nope" / "7.jpg")]
    enc = ImageEncoder(str(tiny_models / name), batch_size=4, device="cpu")
    vectors, mask, stats = encode_image_files(enc, paths, tmp_path / "cache")
    assert vectors.shape == (len(paths), dim)
    assert mask.tolist() == [True] * (len(COVERS) + 1) + [False] * 3
    assert (stats.corrupt, stats.no_path, stats.missing, stats.encoded) == (1, 1, 1, len(COVERS) + 1)
    assert (vectors[~mask] == 0).all()
    again, _, s2 = encode_image_files(enc, paths, tmp_path / "cache")
    assert s2.cached == len(COVERS) + 1 and s2.encoded == 0 and np.abs(again - vectors).max() < 1e-6


# ---- provided embeddings, fusion ------------------------------------------------------------------------
def test_provided_vectors_of_wrong_length_name_item_and_column():
    vectors = [np.ones(4), None, np.ones(3)]
    with pytest.raises(DataError, match=r"column 'emb_82': item 'cid-9' has 3 values; expected 4"):
        provided_modality("emb_82", vectors, 3, keys=["cid-1", "cid-5", "cid-9"])
    m = provided_modality("emb_81", [np.ones(4), None, np.full(4, 2.0)], 3)
    assert m.mask.tolist() == [True, False, True] and m.dim == 4
    with pytest.raises(DataError, match="has 2 rows; expected 3"):
        provided_modality("txt_emb_BERT", np.zeros((2, 4)), 3)
    with pytest.raises(DataError, match="'emb_83': item at row 1 has a NaN"):
        provided_modality("emb_83", np.array([[1.0, 0], [np.nan, 1]]), 2)


def test_missing_modality_is_mean_filled_not_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, (50, 6)).astype(np.float32)  # far from the origin: zeros would be outliers
    mask = np.ones(50, bool)
    mask[:10] = False
    b = balance(Modality("m", x, mask), np.ones(50, bool))
    assert np.allclose(b[:10], 0) and np.allclose(b[10:].mean(0), 0, atol=1e-5)
    assert np.isclose((b[10:] ** 2).sum(1).mean(), 1.0, atol=1e-4)


def test_fuse_reduces_reports_and_keeps_padding_zero():
    rng = np.random.default_rng(1)
    n = 80
    a = Modality("a", rng.normal(size=(n, 20)).astype(np.float32), np.r_[False, np.ones(n - 1, bool)])
    b_mask = np.r_[False, rng.random(n - 1) < 0.7]
    b = Modality("b", rng.normal(size=(n, 30)).astype(np.float32) * b_mask[:, None], b_mask, weight=0.5)
    rows = np.r_[False, np.ones(n - 1, bool)]
    f = fuse([a, b], dim=16, rows=rows)
    assert f.matrix.shape == (n, 16) and (f.matrix[0] == 0).all()
    assert f.figures["pca_components"] == 16 and 0 < f.figures["explained_variance"] < 1
    assert f.figures["modalities"]["b"]["coverage"] == round(b_mask[1:].mean(), 4)
    wide = fuse([a], dim=64, rows=rows)  # only 20 components exist: the rest are zeros, said in figures
    assert wide.figures["pca_components"] == 20 and (wide.matrix[:, 20:] == 0).all()
    assert wide.figures["explained_variance"] == pytest.approx(1.0, abs=1e-4)
    white = fuse([a, b], dim=8, whiten=True, rows=rows).matrix[1:]
    assert np.allclose(white.var(0, ddof=1), 1.0, atol=1e-3)


# ---- alignment, probe ----------------------------------------------------------------------------------
def test_consecutive_pairs_from_left_padded_histories():
    hist = np.array([[0, 0, 3, 4], [0, 3, 4, 5], [0, 0, 0, 7]])
    pairs = consecutive_pairs(hist, target=np.array([5, 9, 8]), label=np.array([1, 0, 1]))
    assert sorted(map(tuple, pairs.tolist())) == [(3, 4), (4, 5), (7, 8)]


def test_alignment_recovers_behaviour_clusters_hidden_in_noise():
    """Items in 8 behaviour clusters; content shows the cluster in 4 of 64 dims, the rest is loud noise.
    Pairs within clusters: alignment must lift content kNN from near chance to clearly above."""
    rng = np.random.default_rng(0)
    n, k = 401, 8
    cluster = np.r_[-1, rng.integers(0, k, n - 1)]
    feats = rng.normal(size=(n, 64)).astype(np.float32) * 2.0
    feats[1:, :4] += rng.normal(size=(k, 4)).astype(np.float32)[cluster[1:]] * 1.5
    rows = np.r_[False, np.ones(n - 1, bool)]
    f = fuse([Modality("c", feats, rows)], dim=16, rows=rows)
    users = rng.integers(0, k, 600)
    hist = np.stack([rng.choice(np.flatnonzero(cluster == c), 6) for c in users])  # (U, 6)
    pairs = consecutive_pairs(hist[:, :5])
    settings = AlignConfig(epochs=30, batch_size=128, lr=0.01, temperature=0.1, logq=False)
    aligned, figs = align(f.features, f.mean, f.components, pairs, f.rows, settings, seed=0)
    before = knn_hit_rate(f.matrix, hist[:, :5], hist[:, 5], k=25)
    after = knn_hit_rate(aligned, hist[:, :5], hist[:, 5], k=25)
    assert figs["holdout_loss_best"] < figs["holdout_loss_start"]
    assert after > before + 0.05 and (aligned[0] == 0).all()


def test_alignment_tunes_only_the_last_text_blocks_and_starts_from_the_untuned_features(tmp_path):
    """embed.align.text_layers=1: the last block of the (tiny) text encoder trains with the projection, the
    rest stays frozen; at step 0 the recomputed text block equals the fused one; the output is the tuned
    encoder's text block through the best projection."""
    from recstack.embed.tune import TextTower

    rng = np.random.default_rng(0)
    n = 61
    words = ["red", "blue", "green", "star", "moon", "river", "stone", "cloud"]
    texts = [""] + [" ".join(rng.choice(words, 3)) for _ in range(n - 1)]
    texts[5] = ""  # an item without text keeps its (zero-centred) block
    tok = AutoTokenizer.from_pretrained(default_text_model())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size, max_position_embeddings=64, **{**TINY, "num_hidden_layers": 2}
    )
    BertModel(config).save_pretrained(tmp_path / "bert2")
    tok.save_pretrained(tmp_path / "bert2")
    enc = TextEncoder(str(tmp_path / "bert2"), "mean", 16, 8, "cpu")
    vectors, mask, _ = encode_texts(enc, texts)
    rows = np.r_[False, np.ones(n - 1, bool)]
    other = Modality("other", rng.normal(size=(n, 6)).astype(np.float32), rows.copy())
    text = Modality("text", vectors, mask & rows, source="tiny", weight=0.7)
    f = fuse([other, text], dim=8, rows=rows)
    blocks = list(enc.model.encoder.layer)
    before = [{k: v.clone() for k, v in b.state_dict().items()} for b in blocks]
    emb_before = enc.model.embeddings.word_embeddings.weight.clone()
    tower = TextTower(enc, texts, text, [other, text], f.rows, f.mean, layers=1)
    x = torch.from_numpy(f.features - f.mean)
    items = torch.arange(n)
    torch.testing.assert_close(tower.features(x, items), x, atol=1e-4, rtol=0)  # step 0 = untuned
    pairs = np.stack([rng.integers(1, n, 400), rng.integers(1, n, 400)], 1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    settings = AlignConfig(epochs=2, batch_size=32, text_layers=1, text_lr=1e-2)
    out, figs = align(f.features, f.mean, f.components, pairs, f.rows, settings, seed=0, tower=tower)
    assert out.shape == (n, 8) and np.isfinite(out).all() and (out[0] == 0).all()
    assert figs["text_layers"] == 1
    changed = [
        any(not torch.equal(b.state_dict()[k], s[k]) for k in s) for b, s in zip(blocks, before, strict=True)
    ]
    assert changed == [False] * (len(blocks) - 1) + [True]  # only the last block moved
    assert torch.equal(enc.model.embeddings.word_embeddings.weight, emb_before)
    with pytest.raises(DataError, match="text_layers=9"):
        TextTower(enc, texts, text, [other, text], f.rows, f.mean, layers=9)


def test_knn_hit_rate_against_brute_force():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(30, 5)).astype(np.float32)
    emb[0] = 0
    hist = np.c_[np.zeros((12, 2), int), rng.integers(1, 30, (12, 4))]
    target = rng.integers(1, 30, 12)
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    hits = 0
    for h, t in zip(hist, target, strict=True):
        s = e @ e[h[-3:]].sum(0)
        s[0] = -np.inf
        s[h] = -np.inf
        hits += t not in h and (s >= s[t]).sum() - 1 < 4
    assert knn_hit_rate(emb, hist, target, k=4, last=3) == hits / 12


# ---- the stage ------------------------------------------------------------------------------------------
def test_embed_stage_writes_matrix_manifest_and_task1_export(tmp_cfg, tiny_models):
    cfg = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "embed.text.enabled=true", "embed.image.enabled=true",
                  f"embed.image.model={tiny_models / 'clip'}", "embed.align.epochs=3")  # fmt: skip
    manifests = run_until(cfg, "embed")
    assert list(manifests) == ["build", "prepare", "embed"]
    out = Paths(cfg).stage_dir("embed")
    emb = np.load(out / Embedded.ITEMS)
    assert emb.shape == (201, 128) and emb.dtype == np.float32 and (emb[0] == 0).all()
    figs = manifests["embed"]["figures"]
    assert set(figs["modalities"]) == {"item_emb_d128", "txt_emb_BERT", "img_emb_CLIPRN50", "text", "image"}
    assert figs["modalities"]["image"]["coverage"] == 1.0 and figs["image"]["encoded"] == 200
    assert figs["modalities"]["text"]["dim"] == 384 and figs["text"]["encoded"] == figs["text"]["texts"] - 1
    assert 0 < figs["explained_variance"] <= 1 and figs["align"]["pairs_train"] > 0
    assert 0 <= figs["valid_knn_hr10"] <= 1
    tags, task1, has = read_item_info(out / Embedded.MMCTR_ITEM_INFO)  # the challenge reader accepts it
    assert np.array_equal(task1, emb) and has.all() and len(tags) == 201
    # rerun with --force: every encoder output comes from the cache
    again = run_stage(cfg, "embed", force=True)["figures"]
    assert again["text"]["cached"] == figs["text"]["encoded"] and again["text"]["encoded"] == 0
    assert again["image"]["cached"] == 200
    assert np.array_equal(np.load(out / Embedded.ITEMS), emb)  # same config, same vectors


def test_embed_stage_survives_missing_image_dir_and_bad_weights_key(tmp_cfg, tiny_models):
    import shutil

    cfg = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "embed.image.enabled=true",
                  f"embed.image.model={tiny_models / 'vit'}", "embed.align.enabled=false")  # fmt: skip
    run_until(cfg, "prepare")
    shutil.rmtree(Paths(cfg).raw_mmctr.item_images)  # covers gone after prepare listed them
    figs = run_stage(cfg, "embed")["figures"]
    assert figs["image"]["missing"] == 200 and figs["modalities"]["image"]["coverage"] == 0.0
    assert "align" not in figs
    bad = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "embed.weights.txt=2")
    with pytest.raises(DataError, match=r"embed.weights names \['txt'\]"):
        run_stage(bad, "embed", force=True)
    items = pd.read_parquet(Paths(cfg).stage_dir("prepare") / "items.parquet")
    assert items["has_image"].iloc[1:].all()


def test_embed_stage_tunes_the_text_encoder_when_asked(tmp_cfg, tiny_models):
    cfg = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "embed.text.enabled=true",
                  f"embed.text.model={tiny_models / 'bert'}", "embed.align.epochs=1",
                  "embed.align.text_layers=1", "embed.probe=false")  # fmt: skip
    figs = run_until(cfg, "embed")["embed"]["figures"]
    assert figs["align"]["text_layers"] == 1 and figs["align"]["pairs_train"] > 0
    emb = np.load(Paths(cfg).stage_dir("embed") / Embedded.ITEMS)
    assert emb.shape == (201, 128) and np.isfinite(emb).all()
    no_text = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "embed.text.enabled=false",
                      "embed.align.text_layers=1")  # fmt: skip
    with pytest.raises(DataError, match="needs the text encoder"):
        run_until(no_text, "embed")
