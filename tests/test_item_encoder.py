"""The generic item encoder (models/item_encoder.py): each part against a hand computation, cold items, the
table path, float16 matrices, the mmctr rankers' initialisation kept draw for draw, and bad columns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recstack.data.tables.ranking import RankItems
from recstack.models.item_encoder import ItemColumns, ItemEncoder, embedding
from recstack.stages.rank import item_columns


def columns(n: int = 30, mm_dtype: torch.dtype = torch.float32, seed: int = 0) -> ItemColumns:
    g = torch.Generator().manual_seed(seed)
    id_index = torch.arange(n)
    id_index[-4:] = 0  # the last four items: unseen in training
    tags = torch.randint(0, 7, (n, 4), generator=g)
    tags[3] = 0  # an item without tags
    return ItemColumns(
        id_index,
        sparse={
            "i100": torch.randint(0, 5, (n,), generator=g),
            "i101": torch.randint(1, 3, (n,), generator=g),
        },
        lists={"tags": tags, "genres": torch.randint(0, 4, (n, 2), generator=g)},
        multimodal={
            "emb_81": torch.randn(n, 6, generator=g).to(mm_dtype),
            "emb_82": torch.randn(n, 3, generator=g),
        },
    )


@torch.no_grad()
def test_each_part_equals_a_hand_computation():
    torch.manual_seed(0)
    cols = columns()
    enc = ItemEncoder(cols, 4, "concat")
    assert enc.dim == 6 * 4  # id, two list means, the sparse sum, two matrices
    ids = torch.tensor([1, 3, 5, 28])
    got = enc.features(ids)  # (4, 24)
    for r, i in enumerate(ids.tolist()):
        tags = [t for t in cols.lists["tags"][i].tolist() if t != 0]
        mean = sum(enc.list_emb[0].weight[t] for t in tags) / len(tags) if tags else torch.zeros(4)
        torch.testing.assert_close(got[r, 4:8], mean)  # masked mean: padding entries neither add nor count
        s = torch.zeros(4)
        for j, name in enumerate(("i100", "i101")):
            c = int(cols.sparse[name][i])
            s = s + (enc.sparse_emb.tables[j].weight[c] if c != 0 else 0)  # code 0 = missing: nothing
        torch.testing.assert_close(got[r, 12:16], s)
        torch.testing.assert_close(got[r, 16:20], enc.mm_proj[0](cols.multimodal["emb_81"][i]))
    assert not got[1, 4:8].any()  # item 3 has no tags: the zero vector, not NaN
    project = ItemEncoder(cols, 4, "project")
    torch.testing.assert_close(project.features(ids), project.out(torch.cat(project.parts(ids), -1)))
    summed = ItemEncoder(cols, 4, "sum")
    assert summed.dim == 4
    torch.testing.assert_close(summed.features(ids), sum(summed.parts(ids)))


@torch.no_grad()
@pytest.mark.parametrize("combine", ["concat", "sum", "project"])
def test_a_cold_item_is_its_features_and_vectors_only(combine):
    torch.manual_seed(0)
    enc = ItemEncoder(columns(), 4, combine)
    cold = torch.tensor([26, 27])  # id index 0
    v = enc.features(cold)
    assert not torch.allclose(v[0], v[1])  # different features and vectors
    enc.id_emb.weight[1:] += 1.0  # every trained id row moves, the zero row does not
    torch.testing.assert_close(enc.features(cold), v)
    enc.mm1[26] += 1.0  # its multimodal vector moves it
    assert not torch.allclose(enc.features(cold)[0], v[0]) and torch.allclose(enc.features(cold)[1], v[1])


@torch.no_grad()
@pytest.mark.parametrize("combine", ["concat", "sum", "project"])
def test_table_path_equals_per_position_path(combine):
    torch.manual_seed(0)
    enc = ItemEncoder(columns(), 4, combine)
    hist, target = torch.randint(0, 30, (5, 8)), torch.randint(1, 30, (5,))
    assert enc.use_table(hist, target) and not enc.use_table(target)
    h, t = enc(hist, target)  # 45 ids > 30 items: one table, rows gathered
    torch.testing.assert_close(h, enc.features(hist), atol=1e-6, rtol=0)
    torch.testing.assert_close(t, enc(target)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(enc.table()[hist], enc.features(hist), atol=1e-6, rtol=0)


def test_a_float16_matrix_is_kept_float16_and_cast_at_use():
    torch.manual_seed(0)
    cols = columns(mm_dtype=torch.float16)
    enc = ItemEncoder(cols, 4, "project")
    assert enc.mm0.dtype == torch.float16 and enc.mm0.data_ptr() == cols.multimodal["emb_81"].data_ptr()
    ids = torch.tensor([2, 7])
    v = enc.features(ids)
    assert v.dtype == torch.float32
    with torch.no_grad():
        part = enc.mm_proj[0](cols.multimodal["emb_81"][ids].float())
    torch.testing.assert_close(enc.parts(ids)[4], part)
    v.sum().backward()  # gradients reach the projection, not the frozen matrix
    assert enc.mm_proj[0].weight.grad is not None and not enc.mm0.requires_grad


@torch.no_grad()
def test_id_dropout_drops_whole_items_in_training_only():
    torch.manual_seed(0)
    enc = ItemEncoder(columns(), 4, "concat", id_dropout=0.5)
    ids = torch.arange(1, 26).repeat(3)  # every trained item three times
    enc.train()
    idp = enc.features(ids)[:, :4].view(3, 25, 4)  # the id part
    full = enc.id_emb(enc.id_index[ids[:25]])  # (25, 4)
    dropped = (idp == 0).all(-1)  # (3, 25)
    assert (dropped == dropped[0]).all()  # an item is dropped at every position of one call or at none
    kept = ~dropped[0]
    assert 5 < int(kept.sum()) < 20 and torch.equal(idp[0, kept], full[kept])
    assert torch.equal(enc.features(ids)[:, 4:], enc.eval().features(ids)[:, 4:])  # other parts untouched
    assert torch.equal(enc.features(ids)[:25, :4], full)  # eval: nothing dropped


class OldMmctrEncoder(nn.Module):
    """The mmctr ItemEncoder before it took generic columns (commit 0fb5179): the DIN / QIN submissions were
    produced by it, so the generic encoder must draw the same initial weights and compute the same bits."""

    def __init__(self, id_index, tags, levels, multimodal, dim, init_std):
        super().__init__()
        self.id_index, self.tags, self.levels, self.multimodal = id_index, tags, levels, multimodal.float()
        self.id_emb = embedding(max(int(id_index.max()) + 1, 2), dim, padding_idx=0, std=init_std)
        self.tag_emb = embedding(max(int(tags.max()) + 1, 2), dim, padding_idx=0, std=init_std)
        self.level_emb = nn.ModuleList(
            embedding(max(int(levels[:, j].max()) + 1, 2), dim, std=init_std) for j in range(levels.shape[1])
        )
        self.mm_proj = nn.Linear(multimodal.shape[1], dim)

    def forward(self, ids):
        t = self.tags[ids]
        has = (t != 0).unsqueeze(-1)
        lv = self.levels[ids]
        return torch.cat([self.id_emb(self.id_index[ids]), (self.tag_emb(t) * has).sum(-2) / has.sum(-2).clamp(min=1),
                          sum(emb(lv[..., j]) for j, emb in enumerate(self.level_emb)),
                          self.mm_proj(self.multimodal[ids])], -1)  # fmt: skip


@pytest.mark.parametrize("std", [0.01, 1.0])
def test_mmctr_columns_give_the_old_encoders_weights_and_bits(std):
    g = torch.Generator().manual_seed(3)
    n = 25
    id_index = torch.arange(n)
    id_index[-3:] = 1  # out of vocabulary
    tags, levels = torch.randint(0, 6, (n, 5), generator=g), torch.randint(0, 11, (n, 2), generator=g)
    levels[4] = 0  # unknown levels keep a learned vector
    mm = torch.randn(n, 7, generator=g)
    torch.manual_seed(0)
    old = OldMmctrEncoder(id_index, tags, levels, mm, 8, std)
    torch.manual_seed(0)
    items = RankItems(id_index.numpy(), tags.numpy(), levels.numpy())
    new = ItemEncoder(item_columns(items, mm.numpy()), 8, "concat", std)
    assert [p.shape for p in old.parameters()] == [p.shape for p in new.parameters()]  # optimiser order too
    for a, b in zip(old.parameters(), new.parameters(), strict=True):
        assert torch.equal(a, b)
    ids = torch.randint(0, n, (4, 9), generator=g)
    assert torch.equal(old(ids), new.features(ids))
    assert new.features(torch.tensor([4]))[0, 16:24].abs().sum() > 0  # level 0 is not the zero row


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"sparse": {"i100": torch.zeros(29, dtype=torch.long)}}, r"sparse\['i100'\]: shape \(29,\)"),
        ({"lists": {"tags": torch.zeros(30, dtype=torch.long)}}, r"lists\['tags'\]: shape \(30,\), expected \(I, width\)"),
        ({"multimodal": {"emb_81": torch.zeros(31, 4)}}, r"multimodal\['emb_81'\].*I = 30 rows"),
        ({"learned_zero": ("tags",)}, "learned_zero names \\['tags'\\], not sparse columns"),
    ],
)  # fmt: skip
def test_bad_item_columns_are_errors_naming_the_column(change, msg):
    base = columns()
    kw = {"sparse": base.sparse, "lists": base.lists, "multimodal": base.multimodal} | change
    with pytest.raises(ValueError, match=msg):
        ItemColumns(base.id_index, **kw)
    with pytest.raises(ValueError, match="combine='mean'"):
        ItemEncoder(base, 4, "mean")  # type: ignore[arg-type]


class OldSeqrecItemTower(nn.Module):
    """seqrec's own item tower before the move (commit 0fb5179): [id | one offset table of the sparse
    columns, missing masked | a Linear per matrix] -> Linear."""

    def __init__(self, id_index, feats, mats, dim):
        super().__init__()
        self.id_index, self.feats, self.mats = id_index, feats, mats
        cards = [int(feats[:, j].max()) + 1 for j in range(feats.shape[1])]
        self.offsets = torch.tensor([0, *cards[:-1]]).cumsum(0)
        self.id_emb = embedding(int(id_index.max()) + 1, dim, padding_idx=0)
        self.feat_emb = embedding(sum(cards), dim)
        self.mm_proj = nn.ModuleList(nn.Linear(m.shape[1], dim) for m in mats)
        self.out = nn.Linear((2 + len(mats)) * dim, dim)

    def forward(self, ids):
        c = self.feats[ids]
        parts = [
            self.id_emb(self.id_index[ids]),
            (self.feat_emb(c + self.offsets) * (c != 0).unsqueeze(-1)).sum(-2),
        ]
        parts += [proj(m[ids].float()) for proj, m in zip(self.mm_proj, self.mats, strict=True)]
        return self.out(torch.cat(parts, -1))


@torch.no_grad()
def test_project_is_the_old_seqrec_item_tower_given_its_weights():
    """The move of seqrec onto the shared encoder changed its initial draws, not the function it computes."""
    torch.manual_seed(0)
    cols = columns(mm_dtype=torch.float16)
    cols.lists = {}
    old = OldSeqrecItemTower(
        cols.id_index, torch.stack(list(cols.sparse.values()), 1), list(cols.multimodal.values()), 4
    )
    new = ItemEncoder(cols, 4, "project")
    new.id_emb.weight.copy_(old.id_emb.weight)
    for j, table in enumerate(new.sparse_emb.tables):  # the old table's slice of column j, row 0 unused
        rows = old.feat_emb.weight[int(old.offsets[j]) : int(old.offsets[j]) + table.num_embeddings]
        table.weight[1 : len(rows)].copy_(rows[1:])
    new.mm_proj.load_state_dict(old.mm_proj.state_dict())
    new.out.load_state_dict(old.out.state_dict())
    ids = torch.arange(30).view(5, 6)
    torch.testing.assert_close(new.features(ids), old(ids), atol=1e-6, rtol=0)
