"""Built-in topologies shaped like real machines.

CPU numbering follows what Linux shows on these machines: first thread of every core
across all sockets (socket 0's cores, then socket 1's), then the second threads in the
same order. So CPU ``c`` and ``c + cores_in_host`` are siblings.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.errors import TopologyError
from corral.topology.model import Cpu, Topology


def build_topology(
    *,
    sockets: int,
    cores_per_socket: int,
    threads_per_core: int,
    numa_per_socket: int = 1,
    cores_per_l3: int | None = None,
    name: str = "",
) -> Topology:
    """A regular host numbered the Linux way (siblings ``cores_in_host`` apart).

    ``cores_per_l3`` defaults to the whole socket. NUMA nodes and L3 domains split each
    socket's cores into equal consecutive blocks.
    """
    l3_cores = cores_per_l3 or cores_per_socket
    if cores_per_socket % numa_per_socket or cores_per_socket % l3_cores:
        raise TopologyError("preset", "cores per socket must divide into NUMA nodes and L3s")
    host_cores = sockets * cores_per_socket
    per_numa = cores_per_socket // numa_per_socket
    l3_per_socket = cores_per_socket // l3_cores
    cpus = []
    for thread in range(threads_per_core):
        for socket in range(sockets):
            for local in range(cores_per_socket):
                core = socket * cores_per_socket + local
                cpus.append(
                    Cpu(
                        id=thread * host_cores + core,
                        core=core,
                        socket=socket,
                        numa=socket * numa_per_socket + local // per_numa,
                        l3=socket * l3_per_socket + local // l3_cores,
                    )
                )
    return Topology.from_records(cpus, name=name)


def toy_16() -> Topology:
    """2 sockets x 4 cores x 2 threads = 16 CPUs; 1 NUMA node and 1 L3 per socket."""
    return build_topology(sockets=2, cores_per_socket=4, threads_per_core=2, name="toy-16")


def single_socket_16() -> Topology:
    """1 socket x 8 cores x 2 threads = 16 CPUs (a desktop Xeon E-2288G); 1 NUMA, 1 L3."""
    return build_topology(sockets=1, cores_per_socket=8, threads_per_core=2, name="xeon-e2288g")


def r4_16xlarge() -> Topology:
    """AWS r4.16xlarge: 2 sockets x 16 cores x 2 threads = 64 CPUs; 1 NUMA and 1 L3 per socket."""
    return build_topology(sockets=2, cores_per_socket=16, threads_per_core=2, name="r4.16xlarge")


def xeon_gold_6230_2s() -> Topology:
    """Two Xeon Gold 6230 with sub-NUMA clustering: 2 sockets x 20 cores x 2 threads = 80
    CPUs; 2 NUMA nodes of 10 cores per socket (4 in all); 1 L3 per socket."""
    return build_topology(
        sockets=2,
        cores_per_socket=20,
        threads_per_core=2,
        numa_per_socket=2,
        name="xeon-gold-6230-2s",
    )


def epyc_7742_2s() -> Topology:
    """Two AMD EPYC 7742 in NPS4: 2 sockets x 64 cores x 2 threads = 256 CPUs; 4 NUMA nodes
    of 16 cores per socket (8 in all); an L3 per 4-core CCX (16 per socket, 32 in all)."""
    return build_topology(
        sockets=2,
        cores_per_socket=64,
        threads_per_core=2,
        numa_per_socket=4,
        cores_per_l3=4,
        name="epyc-7742-2s",
    )


def epyc_9654_2s() -> Topology:
    """Two AMD EPYC 9654 in NPS1: 2 sockets x 96 cores x 2 threads = 384 CPUs; 1 NUMA node
    per socket; an L3 per 8-core CCD (12 per socket, 24 in all)."""
    return build_topology(
        sockets=2,
        cores_per_socket=96,
        threads_per_core=2,
        numa_per_socket=1,
        cores_per_l3=8,
        name="epyc-9654-2s",
    )


def epyc_9754_2s() -> Topology:
    """Two AMD EPYC 9754 (Bergamo) in NPS2: 2 sockets x 128 cores x 2 threads = 512 CPUs;
    2 NUMA nodes of 64 cores per socket (4 in all); an L3 per 8-core CCX (16 per socket)."""
    return build_topology(
        sockets=2,
        cores_per_socket=128,
        threads_per_core=2,
        numa_per_socket=2,
        cores_per_l3=8,
        name="epyc-9754-2s",
    )


PRESETS: dict[str, Callable[[], Topology]] = {
    "toy-16": toy_16,
    "xeon-e2288g": single_socket_16,
    "r4.16xlarge": r4_16xlarge,
    "xeon-gold-6230-2s": xeon_gold_6230_2s,
    "epyc-7742-2s": epyc_7742_2s,
    "epyc-9654-2s": epyc_9654_2s,
    "epyc-9754-2s": epyc_9754_2s,
}


def preset(name: str) -> Topology:
    """The preset called ``name``; `TopologyError` lists the known names otherwise."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise TopologyError(
            "topology", f"unknown preset {name!r}", f"use one of: {', '.join(PRESETS)}"
        ) from None
