"""A peer library's DIN on the split exported by bench_rankers.py; runs in .venv-bench, prints one JSON line.

    .venv-bench/bin/python bench/peer_din.py --lib fuxictr|deepctr --data split.npz --emb 16 --batch 1024 ...

Same features as ours (target item, history of items sharing the target's embedding table, the two
context levels), same embedding size, attention [4E, 2E] and DNN [8E, 4E], Adam, batch size and epochs;
the test AUC reported is the one at the best valid epoch (as our trainer restores the best epoch).
Speed: training samples/s of the train loop alone.

--like-for-like (FuxiCTR only; what bench_rankers.py --like-for-like runs): FuxiCTR's DIN changed to our
DIN's definition: ReLU in the attention MLP (the challenge's DIN; FuxiCTR's model_zoo default is Dice), the
DNN over [target, interest, target * interest, likes, views] (ours) instead of the flat field concat, item
and context embeddings N(0, 0.01) (ours) instead of N(0, 1e-4); FuxiCTR's own training loop (BaseModel.fit:
grad-norm clipping, LR decay on plateau, best checkpoint to disk) and data pipeline (NpzDataLoader) are
kept. The clock starts before its npz files are read, so data loading is in the wall time; the JSON line
carries the load time, the train-loop time (evaluation excluded) and (seconds since the start, valid AUC)
after every epoch's evaluation.
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
    splits = [s for s in ("train", "valid", "test") if f"{s}_label" in d]
    cards = [int(max(d[f"{s}_context"][:, j].max() for s in splits)) + 1 for j in range(2)]
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
    for s in splits:  # FuxiCTR's own input format (its build_dataset's output): not timed, as our prepare
        ctx = d[f"{s}_context"]
        np.savez(os.path.join(tmp, f"{s}.npz"), item_id=d[f"{s}_target"], likes_level=ctx[:, 0],
                 views_level=ctx[:, 1], item_seq=d[f"{s}_hist"], label=d[f"{s}_label"])  # fmt: skip

    act = "Dice" if a.activation == "dice" else "ReLU"
    emb_init = (
        "partial(nn.init.normal_, std=1e-2)" if a.like_for_like else "partial(nn.init.normal_, std=1e-4)"
    )
    dnn_in = 5 * e if a.like_for_like else fmap.sum_emb_out_dim()

    class DIN(BaseModel):
        def __init__(self, feature_map, **kwargs):
            super().__init__(feature_map, model_id="DIN", gpu=-1, early_stop_patience=a.epochs, **kwargs)
            self.embedding_layer = FeatureEmbeddingDict(feature_map, e, embedding_initializer=emb_init)
            self.attention = DIN_Attention(e, attention_units=[4 * e, 2 * e], hidden_activations=act)
            self.dnn = MLP_Block(input_dim=dnn_in, output_dim=1, hidden_units=[8 * e, 4 * e],
                                 hidden_activations="ReLU", output_activation=self.output_activation)  # fmt: skip
            self.compile("adam", "binary_crossentropy", a.lr)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            x = self.get_inputs(inputs)
            emb = self.embedding_layer(x)
            mask = x["item_seq"].long() != 0
            emb["item_seq"] = self.attention(emb["item_id"], emb["item_seq"], mask)
            if a.like_for_like:  # our DIN's DNN input: [t, u, t * u, context]
                t, u = emb["item_id"], emb["item_seq"]
                z = torch.cat([t, u, t * u, emb["likes_level"], emb["views_level"]], -1)
            else:  # model_zoo/DIN: the flat concat of every field's embedding
                z = self.embedding_layer.dict2tensor(emb, flatten_emb=True)
            return {"y_pred": self.dnn(z)}

    torch.manual_seed(a.seed)
    os.makedirs(os.path.join(tmp, fmap.dataset_id), exist_ok=True)  # BaseModel saves its checkpoint here
    t_start = time.perf_counter()  # data loading (npz -> its loaders) and model building are in the clock
    model = DIN(fmap, model_root=tmp, verbose=0, metrics=["AUC"])
    gen = {s: NpzDataLoader(fmap, os.path.join(tmp, f"{s}.npz"), batch_size=a.batch, shuffle=s == "train",
                            num_workers=a.workers)
           for s in splits}  # fmt: skip
    load_s = time.perf_counter() - t_start
    evals: list[float] = []
    curve: list[tuple[float, float]] = []  # (seconds since t_start, valid AUC) after each evaluation
    eval_step, evaluate = model.eval_step, model.evaluate

    def timed_eval_step():  # evaluation is excluded from the training speed, as for ours
        t = time.perf_counter()
        eval_step()
        evals.append(time.perf_counter() - t)

    def stamped_evaluate(*args, **kwargs):
        logs = evaluate(*args, **kwargs)
        if args and args[0] is gen["valid"]:
            curve.append((time.perf_counter() - t_start, float(logs["AUC"])))
        return logs

    model.eval_step, model.evaluate = timed_eval_step, stamped_evaluate
    t0 = time.perf_counter()
    model.fit(gen["train"], epochs=a.epochs, validation_data=gen["valid"])
    train_s = time.perf_counter() - t0 - sum(evals)
    epochs = len(evals)
    valid = roc_auc_score(d["valid_label"], model.predict(gen["valid"]))  # best checkpoint restored by fit
    test = roc_auc_score(d["test_label"], model.predict(gen["test"])) if "test" in gen else float("nan")
    n = len(d["train_label"])
    return {"model": "fuxictr DIN", "valid_auc": valid, "test_auc": test, "samples_per_s": epochs * n / train_s,
            "epochs": epochs, "load_s": load_s, "train_s": train_s, "eval_s": sum(evals), "curve": curve,
            "samples_per_s_with_load": epochs * n / (train_s + load_s), "activation": act,
            "threads": torch.get_num_threads(), "workers": a.workers}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=["fuxictr", "deepctr"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--emb", type=int, default=16)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument(
        "--activation",
        choices=["relu", "dice"],
        default="dice",
        help="attention MLP activation (FuxiCTR model_zoo: Dice; the challenge's DIN: ReLU)",
    )
    p.add_argument("--like-for-like", action="store_true", help="our DIN's definition (see the docstring)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    p.add_argument("--workers", type=int, default=1,
                   help="FuxiCTR NpzDataLoader worker processes (its default 1: batches are assembled in a "
                   "second process; 0: in the training thread)")  # fmt: skip
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    d = dict(np.load(a.data))
    out = run_deepctr(d, a) if a.lib == "deepctr" else run_fuxictr(d, a)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
