import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recstack.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.track in ("mmctr", "tencentgr")


def test_override_and_types():
    cfg = load_config(ROOT / "configs/mmctr_movielens.yaml", ["baseline.folds=3", "ensemble.column=Task1"])
    assert cfg.baseline.folds == 3 and cfg.ensemble.column == "Task1"


def test_misspelt_key_in_yaml_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("track: mmctr\nbaseline:\n  prior_strenght: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'baseline\.prior_strenght'"):
        load_config(bad)


def test_unknown_override_and_bad_value():
    with pytest.raises(ConfigError, match="command line: unknown config key 'data.sourse'"):
        load_config(None, ["data.sourse=raw"])
    with pytest.raises(ConfigError, match="bad value for 'baseline.folds'"):
        load_config(None, ["baseline.folds=many"])
    with pytest.raises(ConfigError, match="'data.source' is 'web'"):
        load_config(None, ["data.source=web"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, ["baseline.folds"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("configs/nope.yaml")


def test_config_is_read_only():
    cfg = load_config(None)
    with pytest.raises(Exception):  # noqa: B017 - omegaconf's ReadonlyConfigError
        cfg.seed = 3


@pytest.mark.parametrize("share", ["2.0", "-0.1"])
def test_unknown_item_share_must_be_a_share(share):
    with pytest.raises(ConfigError, match=r"'data.max_unknown_item_share' is .*; expected \[0, 1\]"):
        load_config(None, [f"data.max_unknown_item_share={share}"])


def test_every_shipped_config_loads_without_the_model_registry_imported():
    """A notebook or script that imports only recstack.config (no models) reads every config: the shipped
    rankers' settings blocks are the schema's, not added by importing models/."""
    code = ("import sys, glob; from recstack.config import load_config\n"
            "[load_config(p) for p in sorted(glob.glob('configs/*.yaml'))]\n"
            "assert 'recstack.models.rankers' not in sys.modules")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_key_reference_is_the_schema(capsys):
    """docs/config_keys.md is `./run.sh keys` (regenerate it after a schema change); every key the schema
    loads is on it with its default and its range or choices."""
    from recstack.cli import main
    from recstack.config import CHOICES, ranged_keys
    from recstack.config_doc import schema_rows

    assert main(["keys"]) == 0
    page = capsys.readouterr().out
    assert (ROOT / "docs" / "config_keys.md").read_text() == page, "run: ./run.sh keys > docs/config_keys.md"
    rows = {key: (default, allowed) for key, default, allowed, _ in schema_rows()}
    loaded = load_config(ROOT / "configs" / "mmctr_movielens.yaml")
    leaves = set(_leaves(OmegaConf.to_container(loaded), set(rows)))
    assert leaves == set(rows)  # every key of a loaded config, and nothing else
    for key, _, rng in ranged_keys():
        assert rows[key][1].startswith(rng.spec) if rng else True, key
    assert all(rows[k][1] == " | ".join(v) for k, v in CHOICES.items())
    assert rows["rank.din.lr"][0] == str(OmegaConf.select(load_config(), "rank.din.lr"))


def _leaves(node, known, prefix=""):
    """Dotted keys of a loaded config's leaves (a dict-valued key the schema knows, e.g. data.emb_dims, is one)."""
    for k, v in node.items():
        if isinstance(v, dict) and f"{prefix}{k}" not in known:
            yield from _leaves(v, known, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"
