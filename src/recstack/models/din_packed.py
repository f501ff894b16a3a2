"""DIN's target attention on the paths that make it fast; models/din.py holds the model as the paper writes it
and calls `interest` here. Every path computes the same function (tests/test_rank_models.py):

- CPU: only the non-padding history positions are computed (MovieLens: 27% of the (B, L) grid is padding),
  as one (N, 2D) x (2D, H0) product, through `AttentionMLP`, a hand-written forward / backward of the
  activation unit's MLP (in-place ReLUs, one masked pass for each ReLU backward);
- CUDA: the dense (B, L) grid (packing would cost a host sync per batch for nonzero's size), with the key
  term W_k k computed once per item of the table and gathered per position when the encoder allows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from recstack.models.din import TargetAttention
    from recstack.models.item_encoder import ItemEncoder


class AttentionMLP(torch.autograd.Function):
    """DIN's activation-unit MLP over the N packed positions, forward and backward by hand (CPU training).

    relu(base [+ extra] + x W0^T) -> [Linear -> ReLU]* -> Linear to one weight per position. Autograd would
    keep a pre-activation and a ReLU output per layer and allocate a fresh (N, H) tensor for each ReLU and
    each ReLU backward; here each layer's activation is one buffer, the ReLU runs in place on it (its output
    is all its backward needs: relu(a) > 0 iff a > 0), and the ReLU backward is one masked pass
    (`threshold_backward`) written over the incoming gradient. Saved: x and the activations, as autograd.
    The memory-bound passes over (N, H) activations were ~25% of the like-for-like profile (bench/README.md
    "Rankers: like-for-like against FuxiCTR"); tests/test_rank_models.py gradchecks this against autograd in
    float64."""

    @staticmethod
    def forward(
        ctx, base, extra, x, w0, *params
    ):  # base (N, H0), extra (N, H0) or None, x (N, K), w0 (H0, K)
        a = torch.addmm(base, x, w0.t())  # (N, H0)
        if extra is not None:
            a += extra
        acts = [a.relu_()]
        weights = params[0::2]  # hidden layers' (H_i+1, H_i) and then the output layer's (1, H_last)
        for w, b in zip(weights[:-1], params[1:-2:2], strict=True):
            acts.append(torch.addmm(b, acts[-1], w.t()).relu_())  # (N, H_i+1)
        out = torch.addmm(params[-1], acts[-1], weights[-1].t()).squeeze(1)  # (N,)
        ctx.has_extra = extra is not None
        ctx.save_for_backward(x, w0, *weights, *acts)
        return out

    @staticmethod
    def backward(ctx, g_out):  # g_out (N,)
        x, w0, *rest = ctx.saved_tensors
        n_w = (
            len(rest) + 1
        ) // 2  # weights: hidden layers + output layer; acts: one per hidden layer + first
        weights, acts = rest[:n_w], rest[n_w:]
        g = g_out.unsqueeze(1)  # (N, 1)
        grads: list[torch.Tensor] = []  # (dW, db) pairs from the last layer back
        grads += [g.t().mm(acts[-1]), g_out.sum(0, keepdim=True)]
        gr = g * weights[-1]  # (N, H_last): the outer product with the output weights (a K = 1 mm is slower)
        for i in range(len(weights) - 2, -1, -1):  # hidden layer i maps acts[i] -> acts[i + 1]
            torch.ops.aten.threshold_backward.grad_input(
                gr, acts[i + 1], 0, grad_input=gr
            )  # ReLU bwd in place
            grads = [gr.t().mm(acts[i]), gr.sum(0), *grads]
            gr = gr.mm(weights[i])  # (N, H_i)
        torch.ops.aten.threshold_backward.grad_input(gr, acts[0], 0, grad_input=gr)  # (N, H0) = d base
        g_x = gr.mm(w0) if ctx.needs_input_grad[2] else None  # (N, K)
        g_w0 = gr.t().mm(x) if ctx.needs_input_grad[3] else None  # (H0, K)
        return gr, gr if ctx.has_extra else None, g_x, g_w0, *grads


def attention_mlp(base, extra, x, w0, linears: list[nn.Linear]) -> torch.Tensor:
    """AttentionMLP over the packed positions: (N, H0) terms, x (N, K), w0 (H0, K), hidden and output
    Linears -> (N,) raw attention weights."""
    params = [t for lin in linears for t in (lin.weight, lin.bias)]
    return AttentionMLP.apply(base, extra, x, w0, *params)


def packed_attention(
    att: TargetAttention, hist, target, row, hist_k=None
):  # hist (N, D), target (B, D), row (N,)
    """The same function over the N non-padding positions only (`row`: each one's batch row). Padding
    weighs 0, so skipping it is exact; on CPU every position costs its share of the MLP (MovieLens:
    27% of the (B, L) positions are padding), and one (N, 2D) x (2D, H0) product replaces B small
    per-row products (bench/README.md "Rankers: like-for-like against FuxiCTR")."""
    q = target.index_select(0, row)  # (N, D)
    base = att.w_q(target).index_select(0, row)  # (N, H0): W_q q + b once per row, gathered
    if hist_k is None:  # + [W_k | W_p] [k; q * k] per position
        w_kp = torch.cat([att.w_k.weight, att.w_p.weight], 1)  # (H0, 2D)
        x, w0 = torch.cat([hist, q * hist], 1), w_kp  # (N, 2D), (H0, 2D)
    else:  # hist_k (N, H0) = W_k k from the item table: only W_p (q * k) per position (D x H0, not 2D x H0)
        x, w0 = q * hist, att.w_p.weight  # (N, D), (H0, D)
    linears = [m for m in att.hidden.modules() if isinstance(m, nn.Linear)]  # hidden, then output
    w = attention_mlp(base, hist_k, x, w0, linears)  # (N,) raw weights (no softmax)
    return torch.zeros_like(target).index_add(0, row, hist * w.unsqueeze(1))  # (B, D); no items -> 0


def interest(
    attention: TargetAttention, items: ItemEncoder, hist, target
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target vector (B, D), the attention-weighted sum of its history (B, D)) for ids hist (B, L), target (B,),
    by the fastest exact path for the device."""
    mask = hist != 0  # (B, L)
    if hist.is_cuda and items.use_table(hist, target):  # encode each item once, gather per position
        table = items.table()  # (I, D)
        h, t = F.embedding(hist, table), F.embedding(target, table)  # (B, L, D), (B, D)
        hist_k = F.embedding(hist, attention.w_k(table))  # (B, L, H0): the key term per item
        return t, attention(h, t, mask, hist_k)
    if hist.is_cuda:  # the encoder's vectors per position, attended over the non-padding ones
        h, t = items(hist, target)  # (B, L, D), (B, D)
        row, col = mask.nonzero(as_tuple=True)  # (N,) each: row-major, so each row's items in order
        return t, packed_attention(attention, h[row, col], t, row)
    # CPU: encode and attend over the non-padding positions only
    flat = mask.reshape(-1).nonzero().squeeze(1)  # (N,) row-major: each row's items in order
    ids = hist.reshape(-1).index_select(0, flat)  # (N,) (cheaper than hist[row, col] here)
    row = flat.div(hist.shape[1], rounding_mode="floor")  # (N,) each item's batch row
    if items.use_table(ids, target):  # the key term once per item, gathered (as on CUDA)
        # index_select, not F.embedding: the same rows, but its backward is one index_add_ where
        # embedding_dense_backward costs 3-4x more on CPU at N ~ 13k positions
        # (bench/README.md "Rankers: like-for-like against FuxiCTR")
        table = items.table()  # (I, D)
        h, t = table.index_select(0, ids), table.index_select(0, target)  # (N, D), (B, D)
        hist_k = attention.w_k(table).index_select(0, ids)  # (N, H0): the key term per item
        return t, packed_attention(attention, h, t, row, hist_k)
    h, t = items(ids, target)  # (N, D), (B, D)
    return t, packed_attention(attention, h, t, row)
