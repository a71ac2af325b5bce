"""``corral topology``: show the host."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.commands.common import clear_errors, console, print_json, topology_from


def topology(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="'sysfs' (this host), a preset, a topology YAML/JSON file or lscpu -p output.",
        ),
    ] = "sysfs",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the topology file format.")
    ] = False,
) -> None:
    """Show the host: sockets, NUMA nodes, L3 groups, cores with their threads."""
    with clear_errors():
        topo = topology_from(source)
    if as_json:
        from corral.topology.file import topology_to_document  # noqa: PLC0415 - start-up time

        print_json(topology_to_document(topo))
    else:
        from corral.commands.render import topology_tree  # noqa: PLC0415 - start-up time

        console().print(topology_tree(topo))
