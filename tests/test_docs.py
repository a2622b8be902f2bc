"""The docs keep up: every setting and every command is documented."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from tamstore.cli import main
from tamstore.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "operating.md").read_text()
    missing = [f.name for f in fields(Settings) if f"`{f.name}`" not in text]
    assert not missing, f"settings missing from docs/operating.md: {missing}"


def _commands(group: click.Group, prefix: str = "tamstore") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{prefix} {name}")
        else:
            out.append(f"{prefix} {name}")
    return out


def test_every_command_is_documented() -> None:
    text = (DOCS / "operating.md").read_text() + (DOCS.parent / "README.md").read_text()
    missing = [c for c in _commands(main) if c not in text]
    assert not missing, f"commands missing from the docs: {missing}"
