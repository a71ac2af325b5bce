"""What every command shares: turning corral errors into a clear exit (JSON under ``--json``),
and the console.

This module is imported by every command, so it imports nothing heavy at module level: rich's
console and the topology readers load when a command first needs them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from corral.errors import CorralError, InputError

if TYPE_CHECKING:
    from rich.console import Console

    from corral.topology.model import Topology

#: Exit code of bad input and of every `CorralError` a command does not map otherwise.
EXIT_INPUT = 2


def console() -> Console:
    """A console on stdout (highlighting off: output is data)."""
    from rich.console import Console  # noqa: PLC0415 - rich's console costs start-up time

    return Console(highlight=False)


def error_document(
    message: str, *, field: str | None = None, fix: str | None = None, kind: str = "CorralError"
) -> dict[str, Any]:
    """The JSON document a ``--json`` command prints on stdout when it fails:
    ``{"error": {"message", "field", "fix", "kind"}}``; ``field`` and ``fix`` are null when
    the error names none, ``message`` is the same text as the ``error:`` line on stderr."""
    return {"error": {"message": message, "field": field or None, "fix": fix or None, "kind": kind}}


def document_of(err: BaseException) -> dict[str, Any]:
    """`error_document` for an exception: an `InputError` gives its field and fix."""
    if isinstance(err, InputError):
        return error_document(str(err), field=err.field, fix=err.fix, kind=type(err).__name__)
    return error_document(str(err), kind=type(err).__name__)


def json_requested() -> bool:
    """Whether the command running now (or a group above it) was given ``--json``.

    Read from the click context, so every command with a ``--json`` option gets JSON errors
    without passing its flag around; False outside a command (e.g. in library code).
    """
    ctx = _current_context()
    while ctx is not None:
        for param in ctx.command.params:
            if "--json" in getattr(param, "opts", ()) and ctx.params.get(param.name or ""):
                return True
        ctx = ctx.parent
    return False


def _current_context() -> Any:
    try:  # typer >= 0.22 vendors click as typer._click
        from typer._click.globals import get_current_context  # noqa: PLC0415
    except ImportError:  # pragma: no cover - older typer on plain click
        from click import get_current_context  # type: ignore[no-redef]  # noqa: PLC0415
    return get_current_context(silent=True)


def report_error(doc: dict[str, Any], *, as_json: bool) -> None:
    """``error: message`` on stderr and, when ``as_json``, ``doc`` as JSON on stdout."""
    print(f"error: {doc['error']['message']}", file=sys.stderr)
    if as_json:
        print_json(doc)


def fail(
    message: str,
    code: int = EXIT_INPUT,
    *,
    field: str | None = None,
    fix: str | None = None,
    as_json: bool | None = None,
) -> NoReturn:
    """Print ``error: message`` on stderr (and the error document on stdout under ``--json``)
    and exit with ``code``. With ``field`` or ``fix`` the message reads like an `InputError`'s
    (``field: message (fix)``). ``as_json`` defaults to whether the command got ``--json``."""
    if field or fix:
        fail_with(InputError(field or "", message, fix or ""), code, as_json=as_json)
    wanted = json_requested() if as_json is None else as_json
    report_error(error_document(message), as_json=wanted)
    raise typer.Exit(code)


def fail_with(err: CorralError, code: int = EXIT_INPUT, *, as_json: bool | None = None) -> NoReturn:
    """`fail` for a corral error: under ``--json`` its field and fix go into the document."""
    wanted = json_requested() if as_json is None else as_json
    report_error(document_of(err), as_json=wanted)
    raise typer.Exit(code) from err


@contextmanager
def clear_errors(*, as_json: bool | None = None) -> Iterator[None]:
    """Turn `CorralError` into ``error: ...`` on stderr and exit code 2, no traceback; under
    ``--json`` stdout also gets ``{"error": {...}}`` (see `error_document`)."""
    try:
        yield
    except CorralError as err:
        fail_with(err, as_json=as_json)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def topology_from(source: str) -> Topology:
    """Load a topology from ``sysfs``, a preset name or a file."""
    from corral.topology.source import load_topology  # noqa: PLC0415 - only when needed

    return load_topology(source)
