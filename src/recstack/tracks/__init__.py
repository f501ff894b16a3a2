"""The tracks, one package each, under one registry: `TRACKS[cfg.track]` gives the pipeline a track's stages
and the CLI its evaluation. A new track = one folder here (its `Track` subclass in `__init__.py` and one module
per stage body, base.py) + its data readers and configs, and one line below."""

from __future__ import annotations

from omegaconf import DictConfig

from recstack.errors import DataError
from recstack.tracks.base import Stage, Track
from recstack.tracks.mmctr import MMCTR
from recstack.tracks.tencentgr import TENCENTGR

TRACKS: dict[str, Track] = {t.name: t for t in (MMCTR, TENCENTGR)}

__all__ = ["TRACKS", "Stage", "Track", "track_of"]


def track_of(cfg: DictConfig | str) -> Track:
    """The registered track of a config (or a track name); an unknown name is an error listing the known."""
    name = cfg if isinstance(cfg, str) else cfg.track
    if name not in TRACKS:
        raise DataError(
            f"'track' is {name!r}; expected one of {', '.join(TRACKS)} (modules of recstack/tracks/)"
        )
    return TRACKS[name]
