"""Topologies shaped like kubelet's own test fixtures, built with corral's types."""

from __future__ import annotations

from corral.topology.model import Cpu, Topology
from corral.topology.presets import xeon_gold_6230_2s


def single_socket_ht() -> Topology:
    """1 socket, 4 cores, 2 threads: siblings (0,4) (1,5) (2,6) (3,7)."""
    return Topology.from_records(
        [Cpu(id=c, core=c % 4, socket=0, numa=0, l3=0) for c in range(8)], name="1s-ht"
    )


def dual_socket_ht_interleaved() -> Topology:
    """2 sockets numbered alternately (even CPUs on socket 0), 3 cores each, 2 threads:
    core k holds CPUs k and k+6; one NUMA node per socket."""
    return Topology.from_records(
        [Cpu(id=c, core=c % 6, socket=c % 2, numa=c % 2, l3=c % 2) for c in range(12)],
        name="2s-ht-interleaved",
    )


def dual_socket_multi_numa_ht() -> Topology:
    """2 sockets x 20 cores x 2 threads, 2 NUMA nodes per socket (node n: CPUs 10n..10n+9
    and their siblings 40 above)."""
    return xeon_gold_6230_2s()
