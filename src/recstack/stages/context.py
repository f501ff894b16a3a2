"""What a stage receives: the config, the artifact names, and the folder it writes into."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from recstack.paths import Paths


@dataclass
class StageContext:
    cfg: DictConfig
    paths: Paths
    out: Path  # the stage's (temporary) folder: write everything here

    def input_dir(self, stage: str) -> Path:
        """An upstream stage's finished folder."""
        return self.paths.stage_dir(stage)
