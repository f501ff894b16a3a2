"""Every `./run.sh ...` line of a code block in README.md and docs/ is a command that exists: `./run.sh`,
`test` and `lab` are cases of run.sh, anything else parses with the CLI's own parser, names a stage or
command of its config's track, loads its config with its overrides, and names files that exist (space
files checked like a config). A renamed key, option, stage or file breaks this test, not a reader."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from recstack import cli
from recstack.config import load_config
from recstack.pipeline import pipeline_of
from recstack.sweep import read_space

from conftest import ROOT

RUN_SH_CASES = (
    "test",
    "lab",
    "-h",
    "--help",
    "help",
)  # handled by run.sh itself (the rest: python -m recstack)
COMMANDS = ("all", "evaluate", "leaderboard", "report", "sweep", "keys")
PLACEHOLDER = re.compile(r"<[^>]+>|\[[^\]]*\]")  # ./run.sh <stage> [--config FILE]: a synopsis, not a command


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) of every ./run.sh line in a fenced code block, continuation lines joined."""
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        fenced, pending = False, ""
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("```"):
                fenced = not fenced
                continue
            if not fenced:
                continue
            text = (pending + " " + line.strip()) if pending else line
            code = re.split(r"\s#\s|\s+#$", text, maxsplit=1)[0].rstrip()
            if code.endswith("\\"):
                pending = code[:-1].strip()
                continue
            pending = ""
            if code.startswith("./run.sh") and not PLACEHOLDER.search(code):
                out.append((f"{doc.relative_to(ROOT)}:{n}", code))
    return out


DOC_COMMANDS = doc_commands()


def test_the_docs_hold_commands():
    assert len(DOC_COMMANDS) >= 15 and any(c == "./run.sh" for _, c in DOC_COMMANDS)


@pytest.mark.parametrize(("where", "command"), DOC_COMMANDS, ids=[w for w, _ in DOC_COMMANDS])
def test_a_documented_command_exists(where, command):
    tokens = shlex.split(command)[1:]
    run_sh = (ROOT / "run.sh").read_text()
    if not tokens or tokens[0] in RUN_SH_CASES:  # a case label of run.sh's `case "$1" in` ("" = bare)
        word = re.escape(tokens[0] if tokens else '""')
        assert re.search(rf"^\s*([^\s|)]+\|)*{word}(\|[^\s|)]+)*\)", run_sh, re.M), (
            f"{where}: not a run.sh case"
        )
        return
    args = cli._parser().parse_intermixed_args(tokens)  # an unknown option: SystemExit
    config = args.config or cli.DEFAULT_CONFIG
    assert (ROOT / config).is_file(), f"{where}: {config} does not exist"
    overrides = [a for a in args.args if "=" in a]
    cfg = load_config(ROOT / config, overrides)  # an unknown key or a bad value: ConfigError naming it
    stages = list(pipeline_of(cfg.track))
    assert args.command in (*COMMANDS, *stages), f"{where}: {args.command!r} is no command or stage"
    if args.space:
        read_space(ROOT / args.space, cfg)
    for path in [a for a in args.args if "=" not in a and not a.startswith("outputs/")]:
        assert (ROOT / path).exists(), f"{where}: {path} does not exist"


def test_help_lists_every_stage_and_command(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for track in ("mmctr", "tencentgr"):
        assert all(re.search(rf"^\s+{s}\s", text, re.M) for s in pipeline_of(track)), track
    assert all(re.search(rf"^\s+{c}\s", text, re.M) for c in COMMANDS)


def test_a_renamed_key_or_option_fails_the_check(tmp_path: Path):
    """The check itself: a command with a key the schema lacks, or an option the CLI lacks, is refused."""
    from recstack.config import ConfigError

    with pytest.raises(ConfigError, match="rank.din.no_such_key"):
        test_a_documented_command_exists("x", "./run.sh rank_din rank.din.no_such_key=1")
    with pytest.raises(SystemExit):
        test_a_documented_command_exists("x", "./run.sh leaderboard --no-such-option")
    with pytest.raises(AssertionError, match="no command or stage"):
        test_a_documented_command_exists("x", "./run.sh rank_nope")
