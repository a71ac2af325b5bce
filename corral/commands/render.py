"""Pictures for people: the topology tree and the CPU map of a placement."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.tree import Tree

if TYPE_CHECKING:  # `corral topology` needs only the tree: start-up time
    from rich.table import Table
    from rich.text import Text

    from corral.placement.assignment import Placement
    from corral.placement.workload import Workload
    from corral.topology.model import Topology

_COLOURS = (
    "red",
    "green",
    "yellow",
    "blue",
    "magenta",
    "cyan",
    "bright_red",
    "bright_green",
    "bright_yellow",
    "bright_blue",
    "bright_magenta",
    "bright_cyan",
)
_LETTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits


def topology_tree(topology: Topology) -> Tree:
    """Sockets > NUMA nodes > L3 domains > cores with their threads."""
    tree = Tree(f"[bold]{topology.name or 'host'}[/]: {topology.describe()}")
    for socket in topology.sockets:
        s_node = tree.add(f"socket {socket}")
        for numa in topology.numa_nodes:
            cores = [c for c in topology.cores if c.socket == socket and c.numa == numa]
            if not cores:
                continue
            n_node = s_node.add(f"NUMA node {numa}: CPUs {topology.cpus_in_numa(numa)}")
            for l3 in sorted({c.l3 for c in cores}):
                in_l3 = [c for c in cores if c.l3 == l3]
                line = "  ".join(f"{c.id}:{c.cpus}" for c in in_l3)
                n_node.add(f"L3 {l3} ({len(in_l3)} cores)  core:threads  {line}")
    return tree


def cpu_map(
    topology: Topology, placement: Placement, workloads: Mapping[str, Workload]
) -> tuple[Text, Table]:
    """A compact map (one bracket per core, one letter per thread) and its legend.

    Exclusive and immovable workloads show their own letter; CPUs of the shared pool show
    ``s``; CPUs no one may use (offline, unassigned) show ``.``.
    """
    from rich.table import Table  # noqa: PLC0415 - see the imports above
    from rich.text import Text  # noqa: PLC0415

    from corral.placement.workload import Policy  # noqa: PLC0415

    owner: dict[int, str] = {}
    legend = Table(title="legend", show_lines=False)
    for column in ("mark", "workload", "qos", "policy", "cpus", "cpuset", "reason"):
        legend.add_column(column)
    letters: dict[str, tuple[str, str]] = {}
    pinned = [
        wid
        for wid in sorted(placement.assignments)
        if workloads[wid].policy in (Policy.EXCLUSIVE, Policy.IMMOVABLE)
    ]
    for index, wid in enumerate(pinned):
        mark = _LETTERS[index % len(_LETTERS)]
        colour = _COLOURS[index % len(_COLOURS)]
        letters[wid] = (mark, colour)
        for cpu in placement.cpuset_of(wid):
            owner.setdefault(cpu, wid)
    shared = placement.pools.get("shared")
    picture = Text()
    for numa in topology.numa_nodes:
        picture.append(f"NUMA {numa}\n", style="bold")
        for l3 in sorted({c.l3 for c in topology.cores if c.numa == numa}):
            picture.append(f"  L3 {l3:<3} ")
            for core in topology.cores:
                if core.numa != numa or core.l3 != l3:
                    continue
                picture.append("[")
                for cpu in core.cpus:
                    if cpu in owner:
                        mark, colour = letters[owner[cpu]]
                        picture.append(mark, style=f"bold {colour}")
                    elif shared is not None and cpu in shared:
                        picture.append("s", style="dim")
                    else:
                        picture.append(".", style="dim")
                picture.append("]")
            picture.append("\n")
    for wid in sorted(placement.assignments):
        w = workloads[wid]
        mark, colour = letters.get(wid, ("s", "dim"))
        legend.add_row(
            Text(mark, style=colour),
            wid,
            str(w.qos),
            str(w.policy),
            f"{w.cpus:g}",
            str(placement.cpuset_of(wid)),
            placement.assignments[wid].reason,
        )
    return picture, legend
