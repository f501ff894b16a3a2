"""Rankers' fast paths against the obvious versions, and all-padding histories (no NaN)."""

import math

import pytest
import torch
from torch import nn

from recstack.data.tables.ranking import RankItems
from recstack.models.dcn import CrossLayer, CrossNet, DCNHead, LowRankMixtureCross
from recstack.models.din import DIN, TargetAttention
from recstack.models.din_packed import AttentionMLP, attention_mlp, packed_attention
from recstack.models.item_encoder import ItemColumns, ItemEncoder
from recstack.models.qin import QIN, SparseTargetAttention
from recstack.models.transformer_dcn import TransformerDCN
from recstack.stages.rank import item_columns


def encoder(n_items=40, dim=8, mm_dim=12, multimodal=True, seed=0) -> ItemEncoder:
    g = torch.Generator().manual_seed(seed)
    id_index = torch.arange(n_items)
    id_index[n_items - 3 :] = 1  # out of vocabulary
    tags = torch.randint(0, 6, (n_items, 3), generator=g)
    tags[0] = 0
    levels = torch.randint(0, 11, (n_items, 2), generator=g)
    mm = torch.randn(n_items, mm_dim, generator=g) if multimodal else None
    return ItemEncoder(mmctr_columns(id_index, tags, levels, mm), dim)


def mmctr_columns(id_index, tags, levels, mm, side=True) -> ItemColumns:
    """The mmctr item side as stages/rank.item_columns builds it."""
    items = RankItems(id_index.numpy(), tags.numpy(), levels.numpy())
    return item_columns(items, None if mm is None else mm.numpy(), side)


def batch(b=6, length=10, n_items=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(1, n_items, (b, length), generator=g)
    hist[1, :4] = 0  # left padding
    hist[2] = 0  # an empty history
    return hist, torch.randint(1, n_items, (b,), generator=g), torch.randint(0, 10, (b, 2), generator=g)


def test_item_table_path_equals_per_position_path():
    torch.manual_seed(0)
    enc = encoder()
    hist, target, _ = batch()
    small = enc(target[:3])[0]  # fewer ids than items: per-position path
    assert sum(i.numel() for i in (hist, target)) > enc.n_items
    h, t = enc(hist, target)  # table path
    torch.testing.assert_close(h, enc.features(hist), atol=1e-5, rtol=0)
    torch.testing.assert_close(t[:3], small, atol=1e-5, rtol=0)
    assert enc.dim == 4 * 8 and encoder(multimodal=False).dim == 3 * 8
    ids_only = ItemEncoder(mmctr_columns(enc.id_index, enc.list0, enc.sparse, None, side=False), 8)
    assert ids_only.dim == 8 and ids_only(hist)[0].shape == (*hist.shape, 8)


class PlainAttention(nn.Module):
    """DIN's activation unit as written in the paper: one MLP over the concatenation [q, k, q-k, q*k]."""

    def __init__(self, dim, units):
        super().__init__()
        self.first = nn.Linear(4 * dim, units[0])
        self.rest = nn.Sequential(nn.ReLU(), nn.Linear(units[0], units[1]), nn.ReLU(), nn.Linear(units[1], 1))

    def forward(self, hist, target, mask):
        q = target.unsqueeze(1).expand_as(hist)
        w = self.rest(self.first(torch.cat([q, hist, q - hist, q * hist], -1))).squeeze(-1)
        return (w.masked_fill(~mask, 0.0).unsqueeze(-1) * hist).sum(1)


def test_din_split_attention_equals_concat_attention():
    torch.manual_seed(0)
    d, units = 12, [16, 8]
    plain, fast = PlainAttention(d, units), TargetAttention(d, units)
    wq, wk, wd, wp = plain.first.weight.detach().split(d, dim=1)
    with torch.no_grad():
        fast.w_q.weight.copy_(wq + wd)
        fast.w_q.bias.copy_(plain.first.bias)
        fast.w_k.weight.copy_(wk - wd)
        fast.w_p.weight.copy_(wp)
        fast.hidden[1][0].load_state_dict(plain.rest[1].state_dict())
        fast.hidden[2].load_state_dict(plain.rest[3].state_dict())
    hist, target = torch.randn(5, 7, d), torch.randn(5, d)
    mask = torch.rand(5, 7) > 0.3
    torch.testing.assert_close(fast(hist, target, mask), plain(hist, target, mask), atol=1e-5, rtol=0)
    # the CUDA form (key term gathered per item) is the same function
    hist_k = fast.w_k(hist)
    torch.testing.assert_close(fast(hist, target, mask, hist_k), plain(hist, target, mask), atol=1e-5, rtol=0)
    # ... and so is the CPU form over the non-padding positions only (models/din_packed.py), with or without
    # the key term from the item table
    row, col = mask.nonzero(as_tuple=True)
    want = plain(hist, target, mask)
    torch.testing.assert_close(packed_attention(fast, hist[row, col], target, row), want, atol=1e-5, rtol=0)
    got = packed_attention(fast, hist[row, col], target, row, hist_k[row, col])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hidden", [[], [3], [5, 3]])
@pytest.mark.parametrize("extra", [True, False])
def test_din_attention_mlp_function_gradcheck(hidden, extra):
    """The hand-written forward/backward of DIN's packed attention MLP (in-place ReLUs, masked-multiply
    ReLU backward): float64 gradcheck against finite differences, and the same values as the autograd
    composition relu(base + extra + x W0^T) -> [Linear -> ReLU]* -> Linear."""
    g = torch.Generator().manual_seed(0)
    n, k, h0 = 7, 3, 4
    dims = [h0, *hidden]
    linears = [nn.Linear(a, b).double() for a, b in zip(dims, [*hidden, 1], strict=True)]
    for lin in linears:
        nn.init.normal_(lin.weight, generator=g)
    leaf = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    base, x, w0 = leaf(n, h0), leaf(n, k), leaf(h0, k)
    ex = leaf(n, h0) if extra else None
    params = [t for lin in linears for t in (lin.weight, lin.bias)]
    inputs = (base, ex, x, w0, *params)
    assert torch.autograd.gradcheck(AttentionMLP.apply, inputs)
    a = torch.relu(base + (ex if extra else 0) + x @ w0.T)
    for lin in linears[:-1]:
        a = torch.relu(lin(a))
    want = linears[-1](a).squeeze(1)
    got = attention_mlp(base, ex, x, w0, linears)
    torch.testing.assert_close(got, want)
    assert (a > 0).any() and (a == 0).any()  # both sides of every ReLU are exercised
    gw = torch.randn(n, generator=g, dtype=torch.float64)
    want_grads = torch.autograd.grad(want, [t for t in inputs if t is not None], gw)
    got_grads = torch.autograd.grad(got, [t for t in inputs if t is not None], gw)
    for w_, g_ in zip(want_grads, got_grads, strict=True):
        torch.testing.assert_close(g_, w_)


def test_qin_folded_attention_equals_query_key_value_attention():
    torch.manual_seed(0)
    d = 10
    w_q, w_k, w_v, w_o = (torch.randn(d, d) / math.sqrt(d) for _ in range(4))
    b_o = torch.randn(d)
    hist, target = torch.randn(4, 6, d), torch.randn(4, d)
    mask = torch.rand(4, 6) > 0.3
    q, k, v = target @ w_q.T, hist @ w_k.T, hist @ w_v.T
    s = torch.relu(torch.einsum("bd,bld->bl", q, k) / math.sqrt(d)) * mask
    expected = target + torch.einsum("bl,bld->bd", s, v) @ w_o.T + b_o
    att = SparseTargetAttention(d)
    with torch.no_grad():
        att.query.weight.copy_(w_k.T @ w_q)
        att.out.weight.copy_(w_o @ w_v)
        att.out.bias.copy_(b_o)
    torch.testing.assert_close(att(hist, target, mask), expected, atol=1e-5, rtol=0)


def _tdcn(enc, **kw):
    return TransformerDCN(enc, [10, 10], emb_dim=8, layers=2, heads=2, ffn=16, max_len=8, summary_last=3,
                          cross_layers=2, dnn_units=(16,), **kw)  # fmt: skip


@pytest.mark.parametrize("model", ["din", "din_dcn", "qin", "transformer_dcn", "transformer_dcn_mix"])
def test_all_padding_histories_give_finite_outputs_and_gradients(model):
    torch.manual_seed(0)
    enc = encoder()
    net = {
        "din": lambda: DIN(enc, [10, 10], emb_dim=8, attention_units=(8,), dnn_units=(16,)),
        "din_dcn": lambda: DIN(enc, [10, 10], emb_dim=8, attention_units=(8,), dnn_units=(16,), head="dcn"),
        "qin": lambda: QIN(enc, [10, 10], emb_dim=8, attention_len=4, layers=2),
        "transformer_dcn": lambda: _tdcn(enc),
        "transformer_dcn_mix": lambda: _tdcn(enc, cross_rank=3, cross_experts=2),
    }[model]()
    hist, target, context = batch()
    hist[:] = 0  # every history empty (cold-start users)
    out = net(hist, target, context)
    assert out.shape == (6,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_din_per_item_key_path_equals_per_position_path():
    torch.manual_seed(0)
    net = DIN(encoder(), [10, 10], emb_dim=8, attention_units=(8, 4), dnn_units=(16,))
    hist, target, context = batch()
    assert net.items.use_table(hist, target)
    fast = net(hist, target, context)
    net.items.n_items = 10**9  # force per-position encoding
    torch.testing.assert_close(fast, net(hist, target, context), atol=1e-5, rtol=0)


def dense_din(net: DIN, hist, target, context):
    """DIN's function computed over every (B, L) position with padding masked to weight 0: what the model
    computed before its CPU path skipped the padding positions."""
    att, mask = net.attention, hist != 0
    h, t = net.items.features(hist), net.items.features(target)  # (B, L, D), (B, D)
    q = t.unsqueeze(1).expand_as(h)
    w = att.hidden(att.w_q(q) + att.w_k(h) + att.w_p(q * h)).squeeze(-1).masked_fill(~mask, 0.0)  # (B, L)
    u = (w.unsqueeze(-1) * h).sum(1)
    ctx = [emb(context[:, j]) for j, emb in enumerate(net.context)]
    return net.head(net.dnn(torch.cat([t, u, t * u, *ctx], -1))).squeeze(-1)


@pytest.mark.parametrize("multimodal", [True, False])
@pytest.mark.parametrize("table", [True, False])
def test_din_cpu_packed_path_equals_dense_masked_path(multimodal, table):
    """The CPU forward attends over the non-padding positions only: same outputs and gradients as the
    dense masked computation, with left padding, an empty history and right padding in the batch."""
    torch.manual_seed(0)
    net = DIN(encoder(multimodal=multimodal), [10, 10], emb_dim=8, attention_units=(8, 4), dnn_units=(16,))
    for p in net.parameters():  # random weights, not the near-zero init, so every term matters
        nn.init.normal_(p, std=0.5)
    hist, target, context = batch()
    hist[3, 7:] = 0  # right padding too: packing must not assume where the padding sits
    assert net.items.use_table(hist[hist != 0], target)  # the key term gathered from the item table
    if not table:
        net.items.n_items = 10**9  # force per-position encoding (and the [W_k | W_p] product)
    outs, grads = [], []
    for f in (net, lambda *x: dense_din(net, *x)):
        net.zero_grad()
        out = f(hist, target, context)
        (out * torch.arange(1.0, 7.0)).sum().backward()
        outs.append(out.detach())
        grads.append({k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4, msg=k)
    assert outs[0].std() > 1e-3  # the rows differ: the comparison is not between constants


def test_micro_batches_give_the_same_training_run_as_whole_batches():
    """DIN has no batch statistics: gradients summed over micro-batches are the whole batch's gradient, so
    the weights after an epoch match (float error only)."""
    import numpy as np

    from recstack.config import DinConfig, RankConfig
    from recstack.data.tables.ranking import RankRows
    from recstack.train.trainer import DeviceRows, TrainSettings, fit

    def rows(n, seed):
        g = torch.Generator().manual_seed(seed)
        hist, target, context = batch(n, 10, seed=seed)
        label = (torch.rand(n, generator=g) < 0.4).float()
        return RankRows(np.arange(n), np.zeros(n, np.int64), hist.numpy(), target.numpy(), context.numpy(),
                        label.numpy())  # fmt: skip

    train, valid = (DeviceRows.of(rows(n, s), torch.device("cpu")) for n, s in ((96, 3), (40, 4)))
    states = []
    for micro in (0, 20):  # 20 does not divide the batch of 48: a shorter last part too
        torch.manual_seed(0)
        model = DIN(encoder(), [10, 10], emb_dim=8, attention_units=(16, 8), dnn_units=(16,))
        s = TrainSettings(
            RankConfig(epochs=2, patience=2, progress=False),
            DinConfig(lr=1e-2, batch_size=48, micro_batch=micro),
            seed=2025,
        )
        res = fit(model, train, valid, s)
        states.append((model.state_dict(), res.curve))
    (a, curve_a), (b, curve_b) = states
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert [r["train_loss"] for r in curve_a] == pytest.approx([r["train_loss"] for r in curve_b], abs=1e-5)


# ---- DCNv2 (models/dcn.py) and the MMCTR winner's Transformer-DCN (models/transformer_dcn.py) ---------------
def test_cross_layer_is_its_formula_on_a_tiny_input():
    """x_{l+1} = x0 * (W x_l + b) + x_l, by hand on 2 rows x 3 features."""
    layer = CrossLayer(3)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0], [0.5, 0.5, 0.5]]))
        layer.linear.bias.copy_(torch.tensor([0.1, 0.0, -1.0]))
    x0 = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]])
    x = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    # W x + b: row 0 (2 + 2 + 0.1, 0, 1.5 - 1) = (4.1, 0, 0.5); row 1 (1 + 2 + 0.1, -1, 1.5 - 1) = (3.1, -1, 0.5)
    expected = torch.tensor(
        [[1 * 4.1 + 2, 2 * 0.0 + 0, 3 * 0.5 + 1], [0 * 3.1 + 1, -1 * -1.0 + 1, 2 * 0.5 + 1]]
    )
    torch.testing.assert_close(layer(x0, x), expected)
    # stacked: layer l reads x0 and the previous state
    net = CrossNet(3, 2)
    h1 = net.layers[0](x0, x0)
    torch.testing.assert_close(net(x0), net.layers[1](x0, h1))


def test_low_rank_mixture_with_one_expert_is_a_rank_r_cross_layer():
    """K = 1 (the gate is 1): x0 * (U tanh(C tanh(V^T x)) + b) + x; with r = W and identity-like maps it is
    a full-rank layer whose W x is replaced by U tanh(C tanh(V^T x))."""
    torch.manual_seed(0)
    mix = LowRankMixtureCross(4, 2, 1)
    x0, x = torch.randn(5, 4), torch.randn(5, 4)
    v, c, u = mix.v[0], mix.c[0], mix.u[0]
    expected = x0 * (torch.tanh(torch.tanh(x @ v) @ c) @ u + mix.bias) + x
    torch.testing.assert_close(mix(x0, x), expected)
    # K experts: the gate mixes them, weights summing to 1 (a convex combination of the experts' outputs)
    mix = LowRankMixtureCross(4, 2, 3)
    outs = []
    for k in range(3):
        outs.append(x0 * (torch.tanh(torch.tanh(x @ mix.v[k]) @ mix.c[k]) @ mix.u[k] + mix.bias))
    g = torch.softmax(mix.gate(x), -1)
    torch.testing.assert_close(mix(x0, x), sum(g[:, k : k + 1] * outs[k] for k in range(3)) + x)


def test_dcn_head_reads_cross_and_deep_parts_in_parallel():
    torch.manual_seed(0)
    head = DCNHead(6, 2, [5, 4], [3])
    x = torch.randn(7, 6)
    joined = torch.cat([head.cross(x), head.dnn(x)], -1)  # (7, 6 + 4)
    torch.testing.assert_close(head(x), head.out(joined).squeeze(-1))
    assert head.out[1].in_features == 3 and head(x).shape == (7,)


def test_transformer_dcn_puts_the_target_beside_every_position():
    """The target is concatenated to each history position: changing the target changes every position's
    transformer output (a DIN-style late fusion would leave them unchanged), and only the [h ; t] input
    width reaches the blocks."""
    torch.manual_seed(0)
    net = _tdcn(encoder()).eval()
    hist, target, context = batch()
    seen = {}
    net.blocks[0].register_forward_hook(lambda m, args, out: seen.__setitem__("in", args[0]))
    net(hist, target, context)
    h, t = net.items(hist[:, -8:], target)
    x = seen["in"]  # (B, L', 2D)
    assert x.shape == (6, 8, 2 * net.items.dim)
    torch.testing.assert_close(x[..., : net.items.dim], h)
    torch.testing.assert_close(x[..., net.items.dim :], t.unsqueeze(1).expand_as(h))


def test_transformer_dcn_ignores_padding_and_reads_only_the_last_max_len_items():
    torch.manual_seed(0)
    net = _tdcn(encoder()).eval()
    hist, target, context = batch(length=12)
    out = net(hist, target, context)
    older = hist.clone()
    older[:, :4] = torch.randint(1, 40, (6, 4))  # positions before the last max_len = 8: not read
    torch.testing.assert_close(net(older, target, context), out)
    # row 1 is left-padded: what the padded keys would hold does not matter (masked), only the ids there
    padded = hist[1:2].clone()
    assert (padded[0, :4] == 0).all()
    wider = torch.cat([torch.zeros(1, 4, dtype=padded.dtype), padded], 1)  # more padding in front
    torch.testing.assert_close(net(wider, target[1:2], context[1:2]), out[1:2], atol=1e-6, rtol=0)
    # a history shorter than summary_last is padded, not an error
    assert net(hist[:, -2:], target, context).shape == (6,)


def test_transformer_dcn_heads_must_divide_its_width():
    from recstack.config import ConfigError

    enc = encoder()
    width = 2 * enc.dim
    with pytest.raises(
        ConfigError, match=rf"rank.transformer_dcn.heads is {width - 1}; it must divide .* = {width}"
    ):
        TransformerDCN(enc, [10], heads=width - 1)
    assert TransformerDCN(enc, [10], heads=width // 2, dnn_units=(4,))  # a divisor is fine


def test_transformer_dcn_is_order_blind_before_the_last_k_and_order_aware_within_them():
    """No position embedding: self-attention sees the older positions as a set, and the max-pool too, so
    shuffling the items before the last `summary_last` leaves every score unchanged; the last k outputs are
    flattened in order, so swapping two of them changes the scores."""
    torch.manual_seed(0)
    net = _tdcn(encoder()).eval()  # max_len 8, summary_last 3
    hist, target, context = batch(length=8)
    hist[1, :4] = torch.tensor([5, 6, 7, 9])  # a full history for every row
    hist[2] = torch.arange(10, 18)
    out = net(hist, target, context)
    shuffled = hist.clone()
    shuffled[:, :5] = hist[:, [3, 0, 4, 2, 1]]  # positions older than the last 3
    torch.testing.assert_close(net(shuffled, target, context), out, atol=1e-5, rtol=0)
    swapped = hist.clone()
    swapped[:, [-1, -2]] = hist[:, [-2, -1]]
    assert not torch.allclose(net(swapped, target, context), out, atol=1e-4)
