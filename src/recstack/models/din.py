"""DIN: Deep Interest Network (Zhou et al., KDD 2018), the MMCTR challenge baseline ranker.

Target attention weights each history item by an MLP over [q, k, q - k, q * k] (masked, no softmax, as in
the paper), the weighted sum is the user's interest in this target, and an MLP scores
[target, interest, target * interest, context]. `head="dcn"` scores it with the parallel DCNv2 head
instead (models/dcn.py): the MMCTR challenge's 3rd place ran DIN with DCN cross layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recstack.models.dcn import DCNHead, mlp
from recstack.models.item_encoder import ItemEncoder, embedding


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


class TargetAttention(nn.Module):
    """DIN activation unit. The first layer W [q; k; q-k; q*k] is split by term:
    (Wq + Wd) q + (Wk - Wd) k + Wp (q*k), so the q term is computed once per row instead of once per
    history position, and each position costs one 2D x H product instead of one 4D x H
    (the plain concat version is kept in the tests, which assert both agree). On CPU only the non-padding
    positions are computed (`packed`); on CUDA the (B, L) grid, with the key term per item of the table."""

    def __init__(self, dim: int, units: list[int]):
        super().__init__()
        self.w_q = nn.Linear(dim, units[0])  # on the target (carries the bias)
        self.w_k = nn.Linear(dim, units[0], bias=False)  # on each history item
        self.w_p = nn.Linear(dim, units[0], bias=False)  # on target * item
        self.hidden = nn.Sequential(nn.ReLU(), mlp(units), nn.Linear(units[-1], 1))

    def forward(self, hist, target, mask, hist_k=None):  # hist (B, L, D), target (B, D), mask (B, L) bool
        if hist_k is None:  # only the non-padding positions (what the CPU path of DIN.forward calls)
            row, col = mask.nonzero(as_tuple=True)  # (N,) each: row-major, so each row's items in order
            return self.packed(hist[row, col], target, row)
        # CUDA: hist_k (B, L, H0) = W_k k gathered from W_k applied once per item of the table; dense over
        # (B, L) (packing would cost a host sync per batch for nonzero's size)
        w_pq = self.w_p.weight * target.unsqueeze(1)  # (B, H0, D): W_p (q * k) = (W_p diag(q)) k
        a = self.w_q(target).unsqueeze(1) + hist_k + torch.bmm(hist, w_pq.transpose(1, 2))  # (B, L, H0)
        w = self.hidden(a).squeeze(-1)  # (B, L)
        w = w.masked_fill(~mask, 0.0)  # DIN keeps raw weights (no softmax); padding weighs 0
        return torch.bmm(w.unsqueeze(1), hist).squeeze(1)  # (B, D) weighted sum; all-padding rows -> 0

    def packed(
        self, hist, target, row, hist_k=None
    ):  # hist (N, D) non-padding items, target (B, D), row (N,)
        """The same function over the N non-padding positions only (`row`: each one's batch row). Padding
        weighs 0, so skipping it is exact; on CPU every position costs its share of the MLP (MovieLens:
        27% of the (B, L) positions are padding), and one (N, 2D) x (2D, H0) product replaces B small
        per-row products (bench/README.md "Rankers: like-for-like against FuxiCTR")."""
        q = target.index_select(0, row)  # (N, D)
        base = self.w_q(target).index_select(0, row)  # (N, H0): W_q q + b once per row, gathered
        if hist_k is None:  # + [W_k | W_p] [k; q * k] per position
            w_kp = torch.cat([self.w_k.weight, self.w_p.weight], 1)  # (H0, 2D)
            x, w0 = torch.cat([hist, q * hist], 1), w_kp  # (N, 2D), (H0, 2D)
        else:  # hist_k (N, H0) = W_k k from the item table: only W_p (q * k) per position (D x H0, not 2D x H0)
            x, w0 = q * hist, self.w_p.weight  # (N, D), (H0, D)
        linears = [m for m in self.hidden.modules() if isinstance(m, nn.Linear)]  # hidden, then output
        w = attention_mlp(base, hist_k, x, w0, linears)  # (N,) raw weights (no softmax)
        return torch.zeros_like(target).index_add(0, row, hist * w.unsqueeze(1))  # (B, D); no items -> 0


class DIN(nn.Module):
    def __init__(
        self,
        items: ItemEncoder,
        context_cards: list[int],  # cardinality of each context feature (mmctr: likes, views level)
        emb_dim: int = 64,
        attention_units: tuple[int, ...] = (512, 256),
        dnn_units: tuple[int, ...] = (1024, 512, 256),
        dropout: float = 0.0,
        head: str = "mlp",  # mlp | dcn: the parallel DCNv2 head over the same input
        cross_layers: int = 3,
        cross_rank: int = 0,  # 0: full-rank cross layers; r > 0: the low-rank mixture (DCN-Mix)
        cross_experts: int = 4,
    ):
        super().__init__()
        self.items = items
        d = items.dim
        self.context = nn.ModuleList(embedding(c, emb_dim, std=0.01) for c in context_cards)
        self.attention = TargetAttention(d, list(attention_units))
        width = 3 * d + len(context_cards) * emb_dim
        if head == "dcn":  # [cross(x) ; dnn(x)] -> logit
            self.dcn = DCNHead(width, cross_layers, list(dnn_units), None, dropout, cross_rank, cross_experts)
        else:
            self.dnn = mlp([width, *dnn_units], dropout)
            self.head = nn.Linear(dnn_units[-1] if dnn_units else width, 1)
        self.head_kind = head

    def forward(self, hist, target, context):  # hist (B, L) ids, target (B,) ids, context (B, C) -> (B,)
        mask = hist != 0  # (B, L)
        if hist.is_cuda and self.items.use_table(hist, target):  # encode each item once, gather per position
            table = self.items.table()  # (I, D)
            h, t = F.embedding(hist, table), F.embedding(target, table)  # (B, L, D), (B, D)
            hist_k = F.embedding(hist, self.attention.w_k(table))  # (B, L, H0): the key term per item
            u = self.attention(h, t, mask, hist_k)  # (B, D)
        elif hist.is_cuda:
            h, t = self.items(hist, target)  # (B, L, D), (B, D)
            u = self.attention(h, t, mask)  # (B, D)
        else:  # CPU: encode and attend over the non-padding positions only
            flat = mask.reshape(-1).nonzero().squeeze(1)  # (N,) row-major: each row's items in order
            ids = hist.reshape(-1).index_select(0, flat)  # (N,) (cheaper than hist[row, col] here)
            row = flat.div(hist.shape[1], rounding_mode="floor")  # (N,) each item's batch row
            if self.items.use_table(ids, target):  # the key term once per item, gathered (as on CUDA)
                # index_select, not F.embedding: the same rows, but its backward is one index_add_ where
                # embedding_dense_backward costs 3-4x more on CPU at N ~ 13k positions
                # (bench/README.md "Rankers: like-for-like against FuxiCTR")
                table = self.items.table()  # (I, D)
                h, t = table.index_select(0, ids), table.index_select(0, target)  # (N, D), (B, D)
                hist_k = self.attention.w_k(table).index_select(0, ids)  # (N, H0): the key term per item
                u = self.attention.packed(h, t, row, hist_k)  # (B, D)
            else:
                h, t = self.items(ids, target)  # (N, D), (B, D)
                u = self.attention.packed(h, t, row)  # (B, D)
        ctx = [emb(context[:, j]) for j, emb in enumerate(self.context)]  # C x (B, E)
        x = torch.cat([t, u, t * u, *ctx], -1)  # (B, 3D + C*E)
        if self.head_kind == "dcn":
            return self.dcn(x)  # (B,) logits
        return self.head(self.dnn(x)).squeeze(-1)  # (B,) logits
