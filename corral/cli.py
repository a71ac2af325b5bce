"""The ``corral`` command line: a thin layer that wires command modules together."""

from __future__ import annotations

import typer

from corral.commands.place import place
from corral.commands.topology import topology

app = typer.Typer(
    name="corral",
    help="Place and isolate latency-critical and best-effort workloads on one Linux host.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(topology)
app.command()(place)


def main() -> None:
    """Entry point of the ``corral`` console script."""
    app()


if __name__ == "__main__":
    main()
