"""Every command and every setting is documented (as sqlite-utils and Datasette check theirs)."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from entrypoints.cli import build_parser
from entrypoints.settings import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIG = (ROOT / "config.toml").read_text()


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _commands(sub, (*prefix, name))
                found += nested or [(*prefix, name)]
    return found


COMMANDS = _commands(build_parser())
SETTINGS = [(section, key) for section, keys in DEFAULTS.items() for key in keys]


def test_the_commands_are_found() -> None:
    assert ("serve",) in COMMANDS
    assert ("db", "migrate") in COMMANDS
    assert len(COMMANDS) >= 13


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_is_in_the_readme_command_reference(command: tuple[str, ...]) -> None:
    reference = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert f"`tillbox {' '.join(command)}" in reference


@pytest.mark.parametrize(("section", "key"), SETTINGS, ids=[f"{s}.{k}" for s, k in SETTINGS])
def test_every_setting_is_in_config_toml_with_a_comment_and_in_the_readme(section: str, key: str) -> None:
    parsed = tomllib.loads(CONFIG)
    assert parsed[section][key] == DEFAULTS[section][key], "config.toml shows the default"
    block = CONFIG.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
    lines = block.splitlines()
    index = next(i for i, line in enumerate(lines) if re.match(rf"^{key}\s*=", line))
    above = lines[:index]
    assert any(line.startswith("#") for line in above[-4:]), f"{section}.{key} has no comment above it"
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert f"`{section}.{key}`" in table


def test_config_toml_has_nothing_else() -> None:
    parsed = tomllib.loads(CONFIG)
    assert {s: set(v) for s, v in parsed.items()} == {s: set(v) for s, v in DEFAULTS.items()}
