"""Every command-line option and argument of every product CLI says what it is for."""

from __future__ import annotations

import importlib

import pytest
from typer.main import get_command

APPS = {
    "fraud-train": "fraud_training.cli",
    "fraud-cases": "fraud_sinks.cli",
    "fraud-rules": "fraud_rules.cli",
}


def undocumented(module: str) -> list[str]:
    cmd = get_command(importlib.import_module(module).app)
    commands = getattr(cmd, "commands", None) or {"": cmd}  # typer vendors its own click
    return [
        f"{name} {param.name}"
        for name, sub in commands.items()
        for param in sub.params
        if param.name != "help" and not getattr(param, "help", None)
    ]


@pytest.mark.parametrize("cli", sorted(APPS))
def test_every_option_has_help(cli: str) -> None:
    assert undocumented(APPS[cli]) == []


@pytest.mark.parametrize(
    ("module", "builder"),
    [("fraud_operator.__main__", "arguments"), ("fraud_devtools.demo", "arguments")],
)
def test_every_argparse_option_has_help(module: str, builder: str) -> None:
    parser = getattr(importlib.import_module(module), builder)()
    bare = [a.dest for a in parser._actions if not a.help and a.dest != "help"]
    assert bare == []


def test_shell_completion_is_offered() -> None:
    """The installed commands offer --install-completion (bash, zsh, fish, PowerShell)."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    for cli in APPS:
        done = subprocess.run(
            [bin_dir / cli, "--help"], capture_output=True, text=True, timeout=60, check=False,
            env={"COLUMNS": "200", "PATH": str(bin_dir)},
        )  # fmt: skip
        assert done.returncode == 0 and "--install-completion" in done.stdout, cli
