"""What the node publishes: per NUMA zone CPU and memory (capacity / allocatable /
available), BE capacity (``corral.io/batch-cpu`` / ``batch-memory``), GPU memory, and the
NodeResourceTopology object made of them. Pure: a snapshot in, values out.

* cpu capacity = the zone's CPUs; allocatable = minus reserved CPUs and CPUs kubelet holds;
  available = allocatable minus CPUs held exclusively (exclusive and immovable pods) and the
  requests of NUMA-bound shared pods (``corral.io/numa-nodes``).
* memory capacity = sysfs MemTotal of the zone; allocatable = capacity (kubelet's memory
  reservation is node-level); available = minus the memory requests of pods whose CPUs
  are on the zone (split by CPUs).
* batch (BE capacity): the controller's BE CPUs on the zone when the controller runs; else
  allocatable minus LC use (the P95 prediction where there is one, else the request) minus
  ``margin`` x allocatable. Memory: allocatable minus LC requests minus the margin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from corral.kube import annotations as ann
from corral.kube import nrt
from corral.kube.config import GpuDevice
from corral.kube.podmap import PodWorkload
from corral.kube.quantity import format_cpu_millis
from corral.placement.workload import Policy, Qos
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


@dataclass(frozen=True, slots=True)
class PlacedPod:
    """A pod as placed now: its mapping, its CPUs (None: not placed), its predicted P95
    cores (None: no prediction)."""

    pod: PodWorkload
    cpuset: CpuSet | None
    predicted_cores: float | None = None

    @property
    def lc(self) -> bool:
        """True for latency-critical pods."""
        return self.pod.workload.qos is Qos.LC

    @property
    def holds_cpus(self) -> bool:
        """True when its CPUs are its own (exclusive or immovable)."""
        return self.pod.workload.policy in (Policy.EXCLUSIVE, Policy.IMMOVABLE)


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """Everything the published numbers depend on."""

    topology: Topology
    reserved: CpuSet
    kubelet_held: CpuSet
    memory_by_numa: Mapping[int, int]
    pods: Sequence[PlacedPod]
    be_cpus: CpuSet | None = None  # the controller's BE CPUs (None: no controller)
    cpu_margin: float = 0.1
    memory_margin: float = 0.1
    distances: Mapping[int, Mapping[int, int]] | None = None
    gpus: Sequence[GpuDevice] = ()


@dataclass(frozen=True, slots=True)
class ZoneCapacity:
    """One NUMA zone's numbers (CPU in milli-CPUs, memory in bytes)."""

    numa: int
    cpu_capacity: int
    cpu_allocatable: int
    cpu_available: int
    memory_capacity: int
    memory_allocatable: int
    memory_available: int
    batch_cpu: int
    batch_memory: int


@dataclass(frozen=True, slots=True)
class GpuCapacity:
    """One GPU's memory in MiB."""

    device: GpuDevice
    available_mib: int


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """The node's published numbers."""

    zones: tuple[ZoneCapacity, ...]
    gpus: tuple[GpuCapacity, ...]

    @property
    def batch_cpu(self) -> int:
        """Node ``corral.io/batch-cpu``, milli-CPUs."""
        return sum(z.batch_cpu for z in self.zones)

    @property
    def batch_memory(self) -> int:
        """Node ``corral.io/batch-memory``, bytes."""
        return sum(z.batch_memory for z in self.zones)

    @property
    def gpu_mem_mib(self) -> int:
        """Node ``corral.io/gpu-mem``, MiB over all devices."""
        return sum(g.device.memory_mib for g in self.gpus)


def _shares(topology: Topology, cpus: CpuSet | None, nodes: Sequence[int]) -> dict[int, float]:
    """How a pod's use splits over NUMA nodes: by its CPUs there (evenly when unplaced)."""
    if not cpus:
        return {n: 1 / len(nodes) for n in nodes}
    counts = {n: len(cpus & topology.cpus_in_numa(n)) for n in nodes}
    total = sum(counts.values()) or 1
    return {n: c / total for n, c in counts.items()}


def compute(snapshot: NodeSnapshot) -> NodeCapacity:
    """The zones' and the node's numbers for ``snapshot``."""
    topo = snapshot.topology
    nodes = list(topo.numa_nodes)
    off = snapshot.reserved | snapshot.kubelet_held
    held: dict[int, float] = dict.fromkeys(nodes, 0.0)  # milli-CPUs not available
    lc_cpu: dict[int, float] = dict.fromkeys(nodes, 0.0)
    memory_used: dict[int, float] = dict.fromkeys(nodes, 0.0)
    lc_memory: dict[int, float] = dict.fromkeys(nodes, 0.0)
    for placed in snapshot.pods:
        workload = placed.pod.workload
        shares = _shares(topo, placed.cpuset, nodes)
        if placed.pod.numa_nodes and not placed.holds_cpus:
            bound = [n for n in placed.pod.numa_nodes if n in held]
            shares = {n: (1 / len(bound) if n in bound else 0.0) for n in nodes}
        for n, share in shares.items():
            memory_used[n] += (workload.memory_request or 0) * share
            if placed.lc:
                lc_memory[n] += (workload.memory_request or 0) * share
        if placed.holds_cpus and placed.cpuset is not None:
            for n in nodes:
                mine = len((placed.cpuset & topo.cpus_in_numa(n)) - off) * 1000
                held[n] += mine
                if placed.lc:
                    lc_cpu[n] += mine
        else:
            if placed.pod.numa_nodes:
                for n, share in shares.items():
                    held[n] += workload.cpus * 1000 * share
            if placed.lc:
                use = workload.cpus if placed.predicted_cores is None else placed.predicted_cores
                for n, share in shares.items():
                    lc_cpu[n] += use * 1000 * share
    zones = []
    for n in nodes:
        cpus = topo.cpus_in_numa(n)
        capacity = len(cpus) * 1000
        allocatable = len(cpus - off) * 1000
        memory = int(snapshot.memory_by_numa.get(n, 0))
        if snapshot.be_cpus is not None:
            batch_cpu = len(snapshot.be_cpus & (cpus - off)) * 1000
        else:
            batch_cpu = int(allocatable - lc_cpu[n] - snapshot.cpu_margin * allocatable)
        batch_memory = int(memory - lc_memory[n] - snapshot.memory_margin * memory)
        zones.append(
            ZoneCapacity(
                numa=n,
                cpu_capacity=capacity,
                cpu_allocatable=allocatable,
                cpu_available=max(0, int(allocatable - held[n])),
                memory_capacity=memory,
                memory_allocatable=memory,
                memory_available=max(0, int(memory - memory_used[n])),
                batch_cpu=max(0, batch_cpu),
                batch_memory=max(0, batch_memory),
            )
        )
    return NodeCapacity(tuple(zones), _gpus(snapshot))


def _gpus(snapshot: NodeSnapshot) -> tuple[GpuCapacity, ...]:
    used: dict[int, int] = {}
    for placed in snapshot.pods:
        index = placed.pod.gpu_index
        if index and placed.pod.requests.gpu_mem_mib:
            # One device takes it all (gpushare: a pod's GPU memory is on one device).
            used[index[0]] = used.get(index[0], 0) + placed.pod.requests.gpu_mem_mib
    return tuple(GpuCapacity(g, max(0, g.memory_mib - used.get(g.index, 0))) for g in snapshot.gpus)


def _cpu_info(name: str, capacity: int, allocatable: int, available: int) -> nrt.ResourceInfo:
    return nrt.ResourceInfo(
        name,
        format_cpu_millis(capacity),
        format_cpu_millis(allocatable),
        format_cpu_millis(available),
    )


def _int_info(name: str, capacity: int, allocatable: int, available: int) -> nrt.ResourceInfo:
    return nrt.ResourceInfo(name, str(capacity), str(allocatable), str(available))


def build_nrt(
    name: str,
    capacity: NodeCapacity,
    *,
    distances: Mapping[int, Mapping[int, int]] | None,
    policy: str,
    fingerprint: str,
    topology: Topology | None = None,
) -> nrt.NodeResourceTopology:
    """The node's NodeResourceTopology for ``capacity``; with ``topology``, also the SMT
    width (``threadsPerCore``) and each NUMA zone's ``socket``, which the extender uses
    for whole-core and one-socket fits."""
    zones: list[nrt.Zone] = []
    for z in capacity.zones:
        zone_attributes: tuple[nrt.AttributeInfo, ...] = ()
        if topology is not None and z.numa in topology.numa_nodes:
            sockets = topology.sockets_of(topology.cpus_in_numa(z.numa))
            if len(sockets) == 1:
                zone_attributes = (nrt.AttributeInfo(nrt.ATTR_SOCKET, str(sockets[0])),)
        costs: tuple[nrt.CostInfo, ...] = ()
        if distances is not None and z.numa in distances:
            costs = tuple(
                nrt.CostInfo(nrt.numa_zone_name(other), value)
                for other, value in sorted(distances[z.numa].items())
            )
        zones.append(
            nrt.Zone(
                name=nrt.numa_zone_name(z.numa),
                type=nrt.ZONE_TYPE_NODE,
                costs=costs,
                attributes=zone_attributes,
                resources=(
                    _cpu_info("cpu", z.cpu_capacity, z.cpu_allocatable, z.cpu_available),
                    _int_info(
                        "memory", z.memory_capacity, z.memory_allocatable, z.memory_available
                    ),
                    _int_info(ann.BATCH_CPU, z.batch_cpu, z.batch_cpu, z.batch_cpu),
                    _int_info(ann.BATCH_MEMORY, z.batch_memory, z.batch_memory, z.batch_memory),
                ),
            )
        )
    for g in capacity.gpus:
        attributes: tuple[nrt.AttributeInfo, ...] = ()
        if g.device.numa_node is not None:
            attributes = (nrt.AttributeInfo(nrt.ATTR_GPU_NUMA, str(g.device.numa_node)),)
        zones.append(
            nrt.Zone(
                name=nrt.gpu_zone_name(g.device.index),
                type=nrt.ZONE_TYPE_GPU,
                attributes=attributes,
                resources=(
                    _int_info(
                        ann.GPU_MEM, g.device.memory_mib, g.device.memory_mib, g.available_mib
                    ),
                ),
            )
        )
    smt: tuple[nrt.AttributeInfo, ...] = ()
    if topology is not None:
        smt = (nrt.AttributeInfo(nrt.ATTR_THREADS_PER_CORE, str(topology.threads_per_core)),)
    return nrt.NodeResourceTopology(
        name=name,
        zones=tuple(zones),
        attributes=(
            nrt.AttributeInfo(nrt.ATTR_POLICY, policy),
            nrt.AttributeInfo(nrt.ATTR_SCOPE, "pod"),
            nrt.AttributeInfo(nrt.ATTR_FINGERPRINT, fingerprint),
            nrt.AttributeInfo(nrt.ATTR_FINGERPRINT_METHOD, "all"),
            *smt,
        ),
        labels={ann.MANAGED_BY_LABEL: ann.MANAGED_BY},
    )
