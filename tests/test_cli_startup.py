"""The command line starts light: what each everyday command imports, the lazy command table,
``--version`` and ``--help`` at 80 columns. Times are printed by ``corral bench cli``; these
tests check what is imported, never how long it took."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from corral.bench.cli_startup import (
    AGENT_FORBIDDEN,
    HEAVY,
    agent_imports,
    heavy_among,
    imported_modules,
)
from corral.cli import COMMANDS, Lazy, app, walk

ROOT = Path(__file__).parents[1]
try:
    from typer._click.utils import make_default_short_help
except ImportError:  # pragma: no cover - older typer on plain click
    from click.utils import make_default_short_help  # type: ignore[no-redef]


def imports_of(*args: str) -> list[str]:
    """Modules ``python -X importtime -m corral.cli ARGS`` imported (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "corral.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return imported_modules(done.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("topology",),
        ("topology", "--json"),
        ("place", "--request", "4", "--topology", "toy-16", "--json"),
        ("place", "--request", "4", "--topology", "toy-16"),
    ],
)
def test_everyday_commands_import_no_heavy_library(args: tuple[str, ...]) -> None:
    assert heavy_among(imports_of(*args)) == ()


def test_help_imports_no_command_module() -> None:
    commands = {m for m in imports_of("--help") if m.startswith("corral.commands.")}
    assert commands == {"corral.commands.common"}


def test_a_command_imports_only_its_own_module() -> None:
    modules = {m for m in imports_of("topology", "--json") if m.startswith("corral.commands.")}
    assert modules == {"corral.commands.topology", "corral.commands.common"}


def test_the_agent_without_a_model_never_imports_lightgbm_or_sklearn() -> None:
    found = agent_imports()
    assert found.placed, "the agent did not place the workload it was given"
    assert found.forbidden_loaded == ()
    assert set(AGENT_FORBIDDEN) <= set(HEAVY)


def test_importtime_lines_are_read_and_other_lines_ignored() -> None:
    text = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   numpy.core\n"
        "2026-01-01 INFO agent.started listen=127.0.0.1:1\n"
        "import time:         3 |          3 | sklearn\n"
    )
    assert imported_modules(text) == ["numpy.core", "sklearn"]
    assert heavy_among(imported_modules(text)) == ("numpy", "sklearn")


def _entries(entries: tuple[Lazy, ...]) -> list[Lazy]:
    return [e for e in entries if e.help is not None]


@pytest.mark.parametrize("entry", _entries(COMMANDS), ids=lambda e: e.name)
def test_lazy_help_lines_match_the_commands_own_help(entry: Lazy) -> None:
    assert entry.help is not None
    loaded = entry.load()
    assert loaded.get_short_help_str(10_000) == make_default_short_help(entry.help, 10_000)


def test_every_command_is_listed_and_reachable() -> None:
    root = typer.main.get_command(app)
    paths = {" ".join(path) for path, _ in walk(root)}
    for entry in COMMANDS:
        assert entry.name in paths
        for sub in entry.subcommands:
            assert f"{entry.name} {sub.name}" in paths
    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0
    for entry in COMMANDS:
        assert re.search(rf"^  {re.escape(entry.name)}\s", out.stdout, re.MULTILINE)


def test_place_defaults_match_the_optimiser() -> None:
    from corral.commands import place
    from corral.placement import optimal

    assert place.DEFAULT_BUDGET_MS == optimal.DEFAULT_BUDGET_MS
    assert place.DEFAULT_GAP == optimal.DEFAULT_GAP


def test_version_is_the_installed_distribution() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"corral {version('corral')}\n"


def _helps() -> list[tuple[str, str, list[str]]]:
    """(command path, --help text at 80 columns, option names) of every command."""
    runner = CliRunner()
    found = []
    for path, command in walk(typer.main.get_command(app)):
        names = [
            opt
            for param in command.params
            if getattr(param, "param_type_name", "") == "option"
            for opt in (*param.opts, *param.secondary_opts)
        ]
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert out.exit_code == 0, (path, out.output)
        found.append((" ".join(path) or "corral", out.stdout, names))
    return found


def test_help_at_80_columns_names_every_option_whole_and_no_bool_type() -> None:
    helps = _helps()
    assert len(helps) > 20
    for path, text, names in helps:
        assert "<bool>" not in text, path
        for name in names:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (path, name)
        assert "…" not in text, path


def test_help_lines_fit_80_columns_except_a_long_option_name() -> None:
    for path, text, names in _helps():
        for line in text.splitlines():
            if len(line) > 80:
                assert any(n in line for n in names), (path, line)
