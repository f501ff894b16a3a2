"""The one place that names every artifact. Stages build no path by hand; they ask this module.

input/<dataset>/                          raw input (your download, or built by the `build` stage)
outputs/<track>/<dataset>/config.yaml     resolved config of the last run
outputs/<track>/<dataset>/logs/           one log file per run
outputs/<track>/<dataset>/<stage>/        a stage's files + manifest.json (written last)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

MANIFEST = "manifest.json"

# mmctr raw layout (WWW 2025 MMCTR / MicroLens-1M, as released)
MMCTR_SUBDIR = "MicroLens_1M_x1"
MMCTR_SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class RawMmctr:
    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / MMCTR_SUBDIR

    def split(self, name: str) -> Path:
        return self.data_dir / f"{name}.parquet"

    @property
    def item_info(self) -> Path:
        return self.data_dir / "item_info.parquet"

    @property
    def item_feature(self) -> Path:
        return self.root / "item_feature.parquet"

    @property
    def item_images(self) -> Path:
        return self.root / "item_images"

    @property
    def test_truth(self) -> Path:
        """Labels of test rows; written by our dataset builders only, used for local scoring."""
        return self.root / "local_truth" / "test_labels.parquet"


@dataclass(frozen=True)
class Paths:
    cfg: DictConfig

    @property
    def raw_dir(self) -> Path:
        return Path(self.cfg.data.raw_dir or Path(self.cfg.input_root) / self.cfg.dataset)

    @property
    def raw_mmctr(self) -> RawMmctr:
        return RawMmctr(self.raw_dir)

    @property
    def cache_dir(self) -> Path:
        """Downloads shared by every dataset (e.g. the recbole wheel holding MovieLens-100K)."""
        return Path(self.cfg.input_root) / "_cache"

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_root) / self.cfg.track / self.cfg.dataset

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def resolved_config(self) -> Path:
        return self.run_dir / "config.yaml"

    def stage_dir(self, stage: str) -> Path:
        return self.raw_dir if stage == "build" else self.run_dir / stage


# ---- files inside stage folders (relative to the stage folder) -------------------------------------
class Prepared:
    """Canonical tables written by `prepare` (mmctr)."""

    ITEMS = "items.parquet"  # item_id, id_index, title, tags, levels, image_path, has_*

    @staticmethod
    def samples(split: str) -> str:  # row_id, user_id, user_index, hist (fixed list), target, ...
        return f"samples_{split}.parquet"

    @staticmethod
    def embedding(name: str) -> str:  # (n_items + 1, d) float32, row == item_id, row 0 padding
        return f"emb_{name}.npy"


class Predictions:
    """Every model's predictions: keyed by (split, row_id), one `pred` per row."""

    FILE = "predictions.parquet"


class Submission:
    MMCTR_CSV = "prediction.csv"
    MMCTR_ZIP = "prediction.zip"
