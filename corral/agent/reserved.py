"""Reserved CPUs (kubelet's ``--reserved-cpus``): never given to exclusive workloads.

During placement the reserved CPUs are held by an immovable pseudo-workload, so both
allocators keep exclusive workloads off them while the shared pool keeps them (the system,
kube daemons and the BE box run there); the pseudo-workload never reaches the store, the
enforcer or the API.
"""

from __future__ import annotations

from dataclasses import replace

from corral.agent.decide import Decision
from corral.errors import InputError
from corral.placement.kubelet import take_cpus
from corral.placement.workload import Policy, Qos, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology

RESERVED_ID = "reserved-cpus"
"""The id of the immovable pseudo-workload that holds the reserved CPUs during placement."""


def reserved_set(topology: Topology, reserved: int | str) -> CpuSet:
    """The reserved CPUs: an explicit list (all online), or a count taken kubelet's way
    (packed from the lowest units, like --reserved-cpus computed from kube-reserved)."""
    if isinstance(reserved, str):
        cpus = CpuSet.parse(reserved)
        offline = cpus - topology.all_cpus
        if offline:
            raise InputError(
                "reserved_cpus", f"CPUs {offline} are not online", f"pick from {topology.all_cpus}"
            )
        return cpus
    if reserved >= len(topology.all_cpus):
        raise InputError(
            "reserved_cpus",
            f"reserving {reserved} of {len(topology.all_cpus)} CPUs leaves none to place on",
            "reserve fewer CPUs",
        )
    return take_cpus(topology, topology.all_cpus, reserved)


def reserved_workload(cpus: CpuSet) -> Workload | None:
    """The immovable pseudo-workload holding ``cpus`` (None when nothing is reserved)."""
    if not cpus:
        return None
    return Workload(
        id=RESERVED_ID, qos=Qos.SYSTEM, cpus=len(cpus), policy=Policy.IMMOVABLE, cpuset=cpus
    )


def without_reserved(decision: Decision) -> Decision:
    """``decision`` with the pseudo-workload taken out of its placement."""
    placement = decision.placement
    assignments = {w: a for w, a in placement.assignments.items() if w != RESERVED_ID}
    refusals = {w: r for w, r in placement.refusals.items() if w != RESERVED_ID}
    return replace(
        decision, placement=replace(placement, assignments=assignments, refusals=refusals)
    )
