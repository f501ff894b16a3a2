"""Every numeric config key has a range in the schema, and load_config holds every value to it before any
stage runs: a value outside is refused naming the key, the value, the range and where it came from."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from recstack.config import ConfigError, Range, load_config, ranged_keys

ROOT = Path(__file__).resolve().parents[1]
KEYS = ranged_keys()


def outside(rng: Range, integer: bool) -> list[float]:
    """Values just outside `rng` (below its lowest bound, above its highest, inside a gap between parts)."""
    step = 1 if integer else 1e-3
    lows = [lo for lo, _, _, _ in rng.parts if math.isfinite(lo)]
    highs = [hi for _, hi, _, _ in rng.parts if math.isfinite(hi)]
    cands = ([min(lows) - step] if lows and all(math.isfinite(lo) for lo, *_ in rng.parts) else []) + (
        [max(highs) + step] if highs and all(math.isfinite(hi) for _, hi, *_ in rng.parts) else []
    )
    # open ends are themselves outside ((0, 1): 0 and 1), gaps between parts ("0 or >= 2": 1)
    cands += [lo for lo, _, inc, _ in rng.parts if math.isfinite(lo) and not inc]
    cands += [hi for _, hi, _, inc in rng.parts if math.isfinite(hi) and not inc]
    cands += [x + step for _, x, _, _ in rng.parts if math.isfinite(x)]
    out = [c for c in cands if c not in rng and (not integer or float(c).is_integer())]
    return [int(c) if integer else c for c in out]


def test_every_numeric_key_states_its_range_and_its_default_is_inside():
    assert len(KEYS) > 150  # the walk reaches the nested blocks and the rankers' (rank.din.*, rank.qin.*)
    assert {"rank.din.batch_size", "rank.qin.lr", "stack.rerank.lgbm.subsample", "seqrec.batch_size"} <= {
        k for k, _, _ in KEYS
    }
    missing = [k for k, _, rng in KEYS if rng is None]
    assert missing == [], f"numeric keys without a range in the schema: {missing}"
    cfg = load_config()
    for key, _, rng in KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        values = (
            list(node.values())
            if hasattr(node, "values")
            else list(node)
            if hasattr(node, "__iter__")
            else [node]
        )
        assert all(v in rng for v in values), (key, values, rng.spec)


@pytest.mark.parametrize("key, typ, rng", KEYS, ids=[k for k, _, _ in KEYS])
def test_a_value_outside_the_range_is_refused_naming_key_value_range_and_override(key, typ, rng):
    container = getattr(typ, "__origin__", None)
    integer = (typ.__args__[-1] if container else typ) is int
    bad = outside(rng, integer)
    if not bad:  # "any": every finite number is allowed; nan is not
        bad = [float("nan")]
    for value in bad:
        if container is dict:
            override, name = f"{key}.x={value}", f"{key}['x']"
        elif container is list:
            override, name = f"{key}=[{value}]", f"{key}[0]"
        else:
            override, name = f"{key}={value}", key
        with pytest.raises(ConfigError) as e:
            load_config(None, [override])
        msg = str(e.value)
        assert msg.startswith(f"command line override '{override}': '{name}' is "), msg
        assert msg.endswith(f"; expected {rng.spec}"), msg


def test_a_bad_value_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("track: tencentgr\nseqrec:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: 'seqrec.batch_size' is 0; expected >= 1$"):
        load_config(path)
    # the command line overrides the file: the value, and then the blame, are the override's
    with pytest.raises(ConfigError, match=r"^command line override 'seqrec.batch_size=-3'"):
        load_config(path, ["seqrec.batch_size=-3"])
    assert load_config(path, ["seqrec.batch_size=4"]).seqrec.batch_size == 4


def test_range_reading():
    r = Range.parse("0 or >= 2")
    assert [x in r for x in (-1, 0, 1, 2, 10**9)] == [False, True, False, True, True]
    r = Range.parse("(0, 1]")
    assert [x in r for x in (0, 1e-9, 1, 1.0001)] == [False, True, True, False]
    r = Range.parse("[0, 1)")
    assert [x in r for x in (0, 0.5, 1)] == [True, True, False]
    assert float("nan") not in Range.parse("any") and -5.0 in Range.parse("any")
    assert True not in Range.parse(">= 0")  # a boolean is no number here
    with pytest.raises(ValueError, match="cannot read 'at least 1'"):
        Range.parse("at least 1")


@pytest.mark.parametrize("override", ["rank.din.batch_size=0", "rank.epochs=-1", "seqrec.batch_size=0"])
def test_the_cli_refuses_before_any_stage_runs(tmp_path, override):
    """The three values that used to crash a later stage (after the earlier ones ran) now stop the run at
    load: exit 2, the key named, nothing written."""
    config = (
        "configs/tencentgr_movielens.yaml"
        if override.startswith("seqrec")
        else "configs/mmctr_movielens.yaml"
    )
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "recstack", "all", "--config", config, override, f"output_root={out}",
         f"input_root={tmp_path / 'in'}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    key = override.split("=")[0]
    assert f"'{key}' is {override.split('=')[1]}; expected >= 1" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not (tmp_path / "in").exists()


def test_keys_that_bound_each_other():
    """seqrec.epochs = 0 is a schedule of min_steps steps; with min_steps 0 too there is no step at all."""
    assert load_config(None, ["seqrec.epochs=0"]).seqrec.min_steps > 0
    with pytest.raises(ConfigError, match="seqrec.epochs and seqrec.min_steps are both 0"):
        load_config(None, ["seqrec.epochs=0", "seqrec.min_steps=0"])
