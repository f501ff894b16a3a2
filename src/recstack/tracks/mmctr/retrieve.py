"""`retrieve` for mmctr: the stacker's retrieval features (retrieve/features.py) for valid and test rows:
target-to-history similarity in the embed space, co-visitation, the content-ANN rank.
    features.parquet       split, row_id + float32 features. Not train rows: the co-visitation and the
                           embed stage's alignment learn from train clicks, so a train row's own label would
                           reach its features."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.artifacts import write_table
from recstack.data.tables.prepared import read_hist, read_samples
from recstack.errors import DataError
from recstack.metrics import auc
from recstack.paths import Retrieved
from recstack.retrieve.covisit import fit_covisit
from recstack.retrieve.features import FEATURES, row_features, train_sequences
from recstack.retrieve.index import VectorIndex, set_threads
from recstack.retrieve.sources import index_settings
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, rc, prep = ctx.cfg, ctx.cfg.retrieve, ctx.input_dir("prepare")
    set_threads(int(rc.index.threads))
    n_rows = pq.read_metadata(prep / "items.parquet").num_rows
    vecs = ctx.item_vectors(n_rows)
    if vecs is None:
        raise DataError("retrieve (mmctr) needs the embed stage's item_emb.npy: run `./run.sh embed`")
    train = read_samples(prep, "train")
    events = train_sequences(
        train["user_id"].to_numpy(),
        read_hist(prep, "train"),
        train["item_id"].to_numpy(),
        train["label"].to_numpy(),
    )
    st = rc.covisit
    matrix, cov_fig = fit_covisit(events, n_rows, st)
    items = np.arange(1, n_rows, dtype=np.int64)
    items = items[np.linalg.norm(vecs[items], axis=1) > 0]
    index = VectorIndex(
        vecs[items],
        index_settings(rc, len(items), cfg.device),
        ids=items,
        cache_dir=ctx.paths.run_dir / "_cache" / "retrieve",
        seed=cfg.seed,
    )
    frames = []
    figures: dict[str, Any] = {"covisit_pairs": cov_fig["pairs_kept"], "indexed_items": len(items)}
    for split in ("valid", "test"):
        rows = read_samples(prep, split)
        feats = row_features(
            read_hist(prep, split),
            rows["item_id"].to_numpy().astype(np.int64),
            vecs,
            matrix,
            index,
            int(rc.feature_history),
            st.recency,
            int(rc.ann_cap),
        )
        frames.append(
            pd.DataFrame({"split": split, "row_id": rows["row_id"].to_numpy().astype(np.int64), **feats})
        )
        if split == "valid" and "label" in rows:
            y = rows["label"].to_numpy()
            for f in FEATURES:
                sign = -1.0 if f == "ann_rank" else 1.0
                figures[f"valid_auc_{f}"] = round(auc(y, sign * feats[f]), 5)
    table = pd.concat(frames, ignore_index=True)
    write_table(ctx.out / Retrieved.FEATURES, pa.Table.from_pandas(table, preserve_index=False))
    figures["rows"] = len(table)
    log.info(
        "retrieve features (valid AUC of each alone): %s",
        ", ".join(f"{f} {figures[f'valid_auc_{f}']:.4f}" for f in FEATURES if f"valid_auc_{f}" in figures),
    )
    return figures
