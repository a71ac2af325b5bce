"""What every command shares: turning corral errors into a clear exit, and the console."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

from corral.errors import CorralError
from corral.topology.model import Topology
from corral.topology.source import load_topology


def console() -> Console:
    """A console on stdout (highlighting off: output is data)."""
    return Console(highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def clear_errors() -> Iterator[None]:
    """Turn `CorralError` into ``error: ...`` on stderr and exit code 2, no traceback."""
    try:
        yield
    except CorralError as err:
        fail(str(err))


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def topology_from(source: str) -> Topology:
    """Load a topology from ``sysfs``, a preset name or a file."""
    return load_topology(source)
