"""Typed experiment config: one YAML per track/dataset over the schema below.

Every knob is named once here with its default. A YAML file or a `key=value` override that names a key
the schema does not know is an error naming the key and where it came from (never silently ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

TRACKS = ("mmctr", "tencentgr")
SOURCES = ("raw", "movielens", "synthetic")
DEVICES = ("auto", "cpu", "cuda")
MMCTR_COLUMNS = ("Task1", "Task2", "Task1&2")  # headers the MMCTR challenge accepts


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the source."""


@dataclass
class MovieLensConfig:
    # MovieLens-100K ships inside the recbole wheel (recbole/dataset_example/ml-100k/); pinned by sha256.
    wheel_spec: str = "recbole==1.2.1"
    wheel_sha256: str = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
    negatives: int = 3  # per positive; 3 gives the 25% positive rate of MicroLens-1M train
    seed: int = 2025


@dataclass
class SyntheticConfig:
    users: int = 2000
    items: int = 3000
    samples_per_user: int = 12  # rows per user; the last goes to test, the one before to valid
    hist_len: int = 64  # width of item_seq (left-padded with 0)
    topics: int = 16
    txt_dim: int = 768  # like txt_emb_BERT
    img_dim: int = 1024  # like img_emb_CLIPRN50
    images: bool = True  # write JPEG covers into item_images/
    image_size: int = 48
    # real MicroLens titles and tags give synthetic items real text; generated words when absent
    fixtures_dir: str = "../shared/fixtures/microlens_100k"
    seed: int = 7


@dataclass
class DataConfig:
    # raw: files already under raw_dir (your competition download); movielens / synthetic: built there.
    source: str = "raw"
    raw_dir: str = ""  # default: <input_root>/<dataset>
    max_hist: int = 64  # models use the last 64 history items (MMCTR baseline)
    movielens: MovieLensConfig = field(default_factory=MovieLensConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class BaselineConfig:
    # Smoothed CTR priors (item, user, levels) + item-CF co-clicks of the target with the recent history,
    # combined by a logistic regression fit on out-of-fold / leave-one-out features.
    prior_strength: float = 20.0  # pseudo-counts of the global CTR added to every group
    folds: int = 5
    window: int = 16  # recent history items whose co-clicks with the target are counted
    max_iter: int = 200


@dataclass
class EnsembleConfig:
    sources: list[str] = field(default_factory=lambda: ["baseline"])
    weights: list[float] = field(default_factory=lambda: [1.0])
    column: str = "Task2"  # MMCTR submission header: Task1, Task2 or Task1&2
    zip: bool = True


@dataclass
class Config:
    track: str = "mmctr"
    dataset: str = "movielens"
    seed: int = 2025
    device: str = "auto"
    input_root: str = "input"
    output_root: str = "outputs"
    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = getattr(e, "full_key", None) or str(e)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(base, parent) if parent else base
        valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
        raise ConfigError(
            f"{source}: unknown config key '{key}' (valid keys here: {', '.join(valid)})"
        ) from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "?")
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{source}: bad value for '{key}': {msg}") from None


def _check(cfg: DictConfig, source: str) -> None:
    def bad(key: str, value: Any, allowed: tuple[str, ...]) -> None:
        raise ConfigError(f"{source}: '{key}' is {value!r}; expected one of {', '.join(allowed)}")

    if cfg.track not in TRACKS:
        bad("track", cfg.track, TRACKS)
    if cfg.data.source not in SOURCES:
        bad("data.source", cfg.data.source, SOURCES)
    if cfg.device not in DEVICES:
        bad("device", cfg.device, DEVICES)
    if cfg.ensemble.column not in MMCTR_COLUMNS:
        bad("ensemble.column", cfg.ensemble.column, MMCTR_COLUMNS)
    if len(cfg.ensemble.sources) != len(cfg.ensemble.weights):
        raise ConfigError(f"{source}: ensemble.sources and ensemble.weights must have the same length")
    if not cfg.dataset or "/" in cfg.dataset:
        raise ConfigError(f"{source}: 'dataset' must be a plain name, got {cfg.dataset!r}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file <- `key=value` overrides; returns a read-only, validated config."""
    cfg: DictConfig = OmegaConf.structured(Config)
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as e:  # yaml syntax errors
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        cfg = _merge(cfg, loaded, str(path))
        source = str(path)
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command line")
        source = f"{source} + command line"
    _check(cfg, source)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def subset(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """The part of the config a stage depends on, as plain data (for fingerprints and manifests)."""
    out: dict[str, Any] = {}
    for k in keys:
        node = OmegaConf.select(cfg, k)
        out[k] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return out
