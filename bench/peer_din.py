"""A peer library's DIN on the split exported by bench_rankers.py; runs in .venv-bench, prints one JSON line.

    .venv-bench/bin/python bench/peer_din.py --lib fuxictr|deepctr --data split.npz --emb 16 --batch 1024 ...

Same features as ours (target item, history of items sharing the target's embedding table, the two
context levels), same embedding size, attention [4E, 2E] and DNN [8E, 4E], Adam, batch size and epochs;
the test AUC reported is the one at the best valid epoch (as our trainer restores the best epoch).
Speed: training samples/s of the train loop alone.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def right_padded(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our histories are left-padded (most recent last); deepctr masks by length from the left."""
    n = (hist != 0).sum(1)
    pad = hist.shape[1] - n
    idx = (np.arange(hist.shape[1])[None, :] + pad[:, None]) % hist.shape[1]
    return np.take_along_axis(hist, idx, 1), n


def run_deepctr(d, a) -> dict:
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIN

    n_items, e = int(d["n_items"]), a.emb
    cards = [
        int(max(d[f"{s}_context"][:, j].max() for s in ("train", "valid", "test"))) + 1 for j in range(2)
    ]
    hist_len = d["train_hist"].shape[1]
    feats = [
        SparseFeat("item_id", n_items, embedding_dim=e),
        SparseFeat("likes_level", cards[0], embedding_dim=e),
        SparseFeat("views_level", cards[1], embedding_dim=e),
        VarLenSparseFeat(SparseFeat("hist_item_id", n_items, embedding_dim=e, embedding_name="item_id"),
                         maxlen=hist_len, length_name="seq_length"),
    ]  # fmt: skip

    def x(split):
        hist, n = right_padded(d[f"{split}_hist"].astype(np.int64))
        ctx = d[f"{split}_context"]
        return {"item_id": d[f"{split}_target"], "likes_level": ctx[:, 0], "views_level": ctx[:, 1],
                "hist_item_id": hist, "seq_length": n}  # fmt: skip

    torch.manual_seed(a.seed)
    model = DIN(feats, ["item_id"], dnn_hidden_units=(8 * e, 4 * e), att_hidden_size=(4 * e, 2 * e),
                device="cpu", seed=a.seed)  # fmt: skip
    model.compile(torch.optim.Adam(model.parameters(), lr=a.lr), "binary_crossentropy")
    xs = {s: x(s) for s in ("train", "valid", "test")}
    best, speeds = (-1.0, 0.0), []
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        model.fit(xs["train"], d["train_label"], batch_size=a.batch, epochs=1, verbose=0, shuffle=True)
        speeds.append(len(d["train_label"]) / (time.perf_counter() - t0))
        v = roc_auc_score(d["valid_label"], model.predict(xs["valid"], 65536).ravel())
        if v > best[0]:
            best = (v, roc_auc_score(d["test_label"], model.predict(xs["test"], 65536).ravel()))
    return {"model": "deepctr-torch DIN", "valid_auc": best[0], "test_auc": best[1],
            "samples_per_s": float(np.median(speeds)), "epochs": a.epochs}  # fmt: skip


def run_fuxictr(d, a) -> dict:
    """FuxiCTR 2.3's wheel ships no DIN class (it lives in its model_zoo); this one is assembled from the
    wheel's own parts exactly as model_zoo/DIN/src/DIN.py does: BaseModel (training loop, early stopping,
    LR decay on plateau, best checkpoint), FeatureEmbeddingDict, DIN_Attention (Dice), MLP_Block, and its
    NpzDataLoader data pipeline."""
    import logging
    import os
    import tempfile
    from collections import OrderedDict

    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader
    from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbeddingDict, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    logging.disable(logging.INFO)
    e, tmp = a.emb, tempfile.mkdtemp()
    n_items, hist_len = int(d["n_items"]), d["train_hist"].shape[1]
    cards = [
        int(max(d[f"{s}_context"][:, j].max() for s in ("train", "valid", "test"))) + 1 for j in range(2)
    ]
    fmap = FeatureMap("bench", tmp)
    fmap.features = OrderedDict(
        item_id={"type": "categorical", "source": "item", "vocab_size": n_items, "padding_idx": 0},
        likes_level={"type": "categorical", "source": "context", "vocab_size": cards[0]},
        views_level={"type": "categorical", "source": "context", "vocab_size": cards[1]},
        item_seq={"type": "sequence", "source": "item", "vocab_size": n_items, "padding_idx": 0,
                  "max_len": hist_len, "share_embedding": "item_id", "feature_encoder": None},
    )  # fmt: skip
    fmap.labels, fmap.default_emb_dim = ["label"], e
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()
    for s in ("train", "valid", "test"):
        ctx = d[f"{s}_context"]
        np.savez(os.path.join(tmp, f"{s}.npz"), item_id=d[f"{s}_target"], likes_level=ctx[:, 0],
                 views_level=ctx[:, 1], item_seq=d[f"{s}_hist"], label=d[f"{s}_label"])  # fmt: skip

    class DIN(BaseModel):
        def __init__(self, feature_map, **kwargs):
            super().__init__(feature_map, model_id="DIN", gpu=-1, early_stop_patience=a.epochs, **kwargs)
            self.embedding_layer = FeatureEmbeddingDict(feature_map, e)
            self.attention = DIN_Attention(e, attention_units=[4 * e, 2 * e], hidden_activations="Dice")
            self.dnn = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                                 hidden_units=[8 * e, 4 * e], hidden_activations="ReLU",
                                 output_activation=self.output_activation)  # fmt: skip
            self.compile("adam", "binary_crossentropy", a.lr)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            x = self.get_inputs(inputs)
            emb = self.embedding_layer(x)
            mask = x["item_seq"].long() != 0
            emb["item_seq"] = self.attention(emb["item_id"], emb["item_seq"], mask)
            return {"y_pred": self.dnn(self.embedding_layer.dict2tensor(emb, flatten_emb=True))}

    torch.manual_seed(a.seed)
    os.makedirs(os.path.join(tmp, fmap.dataset_id), exist_ok=True)  # BaseModel saves its checkpoint here
    model = DIN(fmap, model_root=tmp, verbose=0, metrics=["AUC"])
    gen = {s: NpzDataLoader(fmap, os.path.join(tmp, f"{s}.npz"), batch_size=a.batch, shuffle=s == "train")
           for s in ("train", "valid", "test")}  # fmt: skip
    evals: list[float] = []
    eval_step = model.eval_step

    def timed_eval_step():  # evaluation is excluded from the training speed, as for ours
        t = time.perf_counter()
        eval_step()
        evals.append(time.perf_counter() - t)

    model.eval_step = timed_eval_step
    t0 = time.perf_counter()
    model.fit(gen["train"], epochs=a.epochs, validation_data=gen["valid"])
    train_s = time.perf_counter() - t0 - sum(evals)
    epochs = len(evals)
    valid = roc_auc_score(d["valid_label"], model.predict(gen["valid"]))  # best checkpoint restored by fit
    test = roc_auc_score(d["test_label"], model.predict(gen["test"]))
    return {"model": "fuxictr DIN", "valid_auc": valid, "test_auc": test,
            "samples_per_s": epochs * len(d["train_label"]) / train_s, "epochs": epochs}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=["fuxictr", "deepctr"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--emb", type=int, default=16)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=2025)
    a = p.parse_args()
    d = dict(np.load(a.data))
    out = run_deepctr(d, a) if a.lib == "deepctr" else run_fuxictr(d, a)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
