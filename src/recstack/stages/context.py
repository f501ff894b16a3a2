"""What a stage receives: the config, the artifact names, and the folder it writes into."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from recstack.errors import DataError
from recstack.paths import MANIFEST, Embedded, Paths


@dataclass
class StageContext:
    cfg: DictConfig
    paths: Paths
    out: Path  # the stage's (temporary) folder: write everything here

    def input_dir(self, stage: str) -> Path:
        """An upstream stage's finished folder."""
        return self.paths.stage_dir(stage)

    def embedded_items(self) -> Path | None:
        """The embed stage's item matrix, or None: the stage has not finished, or it found no item vector at
        all and wrote none (stages/embed.py; e.g. a TencentGR download without mm_emb/ or item texts)."""
        folder = self.input_dir("embed")
        path = folder / Embedded.ITEMS
        return path if (folder / MANIFEST).is_file() and path.is_file() else None

    def item_vectors(self, n_rows: int) -> np.ndarray | None:
        """The embed stage's item matrix, loaded and checked to hold one row per item; None as above."""
        path = self.embedded_items()
        if path is None:
            return None
        vecs = np.load(path)
        if vecs.ndim != 2 or vecs.shape[0] != n_rows:
            raise DataError(f"{path}: shape {vecs.shape}; expected ({n_rows}, dim): one row per item")
        return vecs
