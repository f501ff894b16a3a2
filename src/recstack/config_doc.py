"""`./run.sh keys`: every key of the config schema with its default, the values it allows and what it does,
as markdown. docs/config_keys.md is this command's output, and a test keeps the two equal, so the page
cannot drift from the schema: the defaults and ranges are read from the dataclasses (`num` / `nums`
ranges, `config.CHOICES`), the descriptions from the comments beside or above each field in config.py.

    ./run.sh keys > docs/config_keys.md
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from recstack import config as C

_FIELD = re.compile(r"^    (\w+)\s*:")  # a field of a dataclass body (4 spaces in: not a continuation line)
SEEN_KEYS = ("retrieve.exclude_seen", "seqrec.exclude_seen", "baseline.exclude_seen")


def _comments(cls: type) -> dict[str, str]:
    """{field: its comment in config.py}: the comment lines right above the field and the one on its line; a
    field a base class declares (config.RankerBlock) keeps the base's comment unless the class redeclares it."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            out |= _own_comments(base)
    return out | _own_comments(cls)


def _own_comments(cls: type) -> dict[str, str]:
    out: dict[str, str] = {}
    above: list[str] = []
    in_doc = False
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if in_doc:  # inside a docstring: skipped up to its closing quotes
            in_doc = not text.endswith('"""')
            continue
        if text.startswith('"""'):
            in_doc = not (len(text) > 3 and text.endswith('"""'))
            continue
        if text.startswith("#"):
            above.append(text.lstrip("#").strip())
            continue
        m = _FIELD.match(line)
        if m:
            inline = line.split("  # ", 1)[1] if "  # " in line else ""
            inline = re.sub(r"\s*#?\s*fmt: skip$", "", inline).strip()
            out[m.group(1)] = " ".join(t for t in (*above, inline) if t)
        if text or m:
            above = []
    return out


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def schema_rows(schema: type = C.Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, default, allowed values, description) of every leaf key, in schema order; the rankers'
    blocks (config.RANK_MODELS) as `rank.<name>.*` after the rest of `rank`."""
    hints = typing.get_type_hints(schema, vars(C))
    notes = _comments(schema)
    rows: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(schema):
        key, t = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(t):
            rows += schema_rows(t, f"{key}.")
            if key == "rank":
                for name, settings in C.RANK_MODELS.items():
                    rows += schema_rows(settings, f"rank.{name}.")
            continue
        rng = f.metadata.get("range")
        if key in C.CHOICES:
            allowed = " | ".join(C.CHOICES[key])
        elif key in SEEN_KEYS:
            allowed = " | ".join(C.SEEN_SETTINGS)
        elif rng is not None:
            allowed = rng.spec + (" (each)" if typing.get_origin(t) in (list, dict) else "")
        elif t is bool:
            allowed = "true | false"
        else:
            allowed = ""
        rows.append((key, _show(_default(f)), allowed, notes.get(f.name, "")))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe inside a table cell


def keys_markdown() -> str:
    """The page: one table per top-level block of the schema."""
    out = [
        "# Every config key",
        "",
        "[← README](../README.md) · [configs](configs.md) · [extending](extending.md) · [scale](scale.md)",
        "",
        "Generated from the schema in `src/recstack/config.py` by `./run.sh keys > docs/config_keys.md` (a test",
        "fails when the two differ). A YAML in `configs/` or a `key=value` override sets any of these; an",
        "unknown key or a value outside *allowed* stops the run at load, naming the key and where it came from.",
        "The shipped configs and what they choose: [configs.md](configs.md).",
        "",
    ]
    block = None
    for key, default, allowed, note in schema_rows():
        top = key.split(".")[0] if "." in key else "top level"
        if key.startswith("rank.") and key.count(".") >= 2 and key.split(".")[1] in C.RANK_MODELS:
            top = f"rank.{key.split('.')[1]}"
        if top != block:
            block = top
            out += [
                "",
                f"## {block}",
                "",
                "| key | default | allowed | what it does |",
                "| --- | --- | --- | --- |",
            ]
        out.append(f"| `{key}` | `{_cell(default)}` | {_cell(allowed)} | {_cell(note)} |")
    return "\n".join(out) + "\n"
