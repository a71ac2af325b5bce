"""Hollow nodes for the cluster benchmark (kubemark's idea): many simulated nodes in one
process, each playing its kubelet and corral node agent against a real apiserver.

Each hollow node has a topology preset, memory per NUMA zone, optional GPUs, and:

* admits the pods bound to it in the order it sees them (one watch for all nodes), as
  kubelet's CPU manager and topology manager (single-numa-node) and the corral agent would:
  exclusive pods take CPUs packed kubelet's way (`corral.kube.podmap.numa_bound_cpus`) from
  the zones in ``corral.io/numa-nodes`` when the extender wrote it, else from the lowest zone
  that has room; GPU pods take the device in ``corral.io/gpu-index``, else the first device
  with room (a device plugin's choice);
* records the truth of each admission (`Admission`): a Guaranteed pod that fits one zone
  of the node by size but got CPUs from several zones (or none: overbooked), pods spanning
  sockets, BE pods beyond the node's real BE capacity at that moment, GPU pods on a device
  without room;
* publishes, at most every ``publish_interval_s`` (the agent's default cadence, 1 s), its
  NodeResourceTopology (computed by the node agent's own pure code,
  `corral.kube.capacity.compute` and `build_nrt`, with the pods' fingerprint) and its node
  status (``corral.io/batch-cpu``, ``corral.io/gpu-mem``). The lag between a bind and the
  next publication is the stale-data window the extender must survive.

The issue-10 node agent runs one process per node with the agent core behind it; 16 of
them do not fit this 2-core machine beside a control plane, so the bench simulates them
with the agent's publishing functions instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from corral.errors import CorralError, InputError
from corral.kube import annotations as ann
from corral.kube import nrt
from corral.kube.capacity import NodeSnapshot, PlacedPod, build_nrt, compute
from corral.kube.client import ApiError, KubeClient, node_status_path, nodes_path, pods_path
from corral.kube.config import GpuDevice
from corral.kube.fingerprint import sign
from corral.kube.podmap import PodWorkload, is_terminal, numa_bound_cpus, pod_to_workload
from corral.kube.watch import Change, ChangeType, Informer
from corral.placement.kubelet import take_cpus
from corral.placement.workload import Policy, Qos
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology
from corral.topology.presets import preset

log = logging.getLogger(__name__)

MEMORY_GIB: Final = {
    "toy-16": 64,
    "xeon-e2288g": 64,
    "r4.16xlarge": 488,
    "xeon-gold-6230-2s": 384,
    "epyc-7742-2s": 1024,
}
"""Host memory per preset, GiB (r4.16xlarge: AWS's figure; the others typical builds)."""
LOCAL, SAME_SOCKET, OTHER_SOCKET = 10, 12, 21
TOPOLOGY_POLICY: Final = "single-numa-node"
HOLLOW_LABEL: Final = "corral.io/hollow"
"""Label of hollow nodes (the bench's pods select it, so other nodes are left alone)."""


@dataclass(frozen=True, slots=True)
class HollowSpec:
    """One hollow node."""

    name: str
    preset: str
    gpus: tuple[GpuDevice, ...] = ()


@dataclass(frozen=True, slots=True)
class Admission:
    """What happened when a hollow node admitted a pod (the bench's ground truth)."""

    key: str
    node: str
    kind: str  # guaranteed | burstable | be | gpu | other
    at: float
    misaligned: bool = False
    multi_zone: bool = False
    cross_socket: bool = False
    be_over: bool = False
    gpu_over: bool = False


@dataclass
class _Held:
    pod: PodWorkload
    cpuset: CpuSet | None
    gpu: int | None


def distances(topology: Topology) -> dict[int, dict[int, int]]:
    """SLIT-like distances: 10 local, 12 same socket, 21 another socket."""
    socket_of = {c.numa: c.socket for c in topology.cpus}
    return {
        a: {
            b: LOCAL if a == b else SAME_SOCKET if socket_of[a] == socket_of[b] else OTHER_SOCKET
            for b in topology.numa_nodes
        }
        for a in topology.numa_nodes
    }


class HollowNode:
    """One simulated node: its CPUs, pods and published numbers."""

    def __init__(self, spec: HollowSpec) -> None:
        self.spec = spec
        self.topology = preset(spec.preset)
        memory = MEMORY_GIB.get(spec.preset, 64) * 2**30
        numa = self.topology.numa_nodes
        self.memory_by_numa = {n: memory // len(numa) for n in numa}
        self.distances = distances(self.topology)
        self.free = self.topology.all_cpus
        self.held: dict[str, _Held] = {}
        self.gpu_used: dict[int, int] = {g.index: 0 for g in spec.gpus}
        self.version = 0

    @property
    def name(self) -> str:
        """The node's name."""
        return self.spec.name

    # --- objects ----------------------------------------------------------------------
    def snapshot(self) -> NodeSnapshot:
        """The node agent's view of this node now."""
        return NodeSnapshot(
            topology=self.topology,
            reserved=CpuSet(),
            kubelet_held=CpuSet(),
            memory_by_numa=self.memory_by_numa,
            pods=[PlacedPod(h.pod, h.cpuset) for h in self.held.values()],
            distances=self.distances,
            gpus=self.spec.gpus,
        )

    def nrt_object(self) -> dict[str, Any]:
        """The NodeResourceTopology JSON the agent would publish now."""
        pods = [(h.pod.namespace, h.pod.name) for h in self.held.values()]
        obj = build_nrt(
            self.name,
            compute(self.snapshot()),
            distances=self.distances,
            policy=TOPOLOGY_POLICY,
            fingerprint=sign(pods),
            topology=self.topology,
        )
        return obj.to_json()

    def resources(self) -> dict[str, str]:
        """Node capacity/allocatable: cpu, memory, pods, batch-cpu, gpu-mem."""
        cap = compute(self.snapshot())
        out = {
            "cpu": str(len(self.topology.all_cpus)),
            "memory": str(sum(self.memory_by_numa.values())),
            "pods": "1000",
            ann.BATCH_CPU: str(cap.batch_cpu),
        }
        if self.spec.gpus:
            out[ann.GPU_MEM] = str(cap.gpu_mem_mib)
        return out

    def node_object(self) -> dict[str, Any]:
        """The Node to create (Ready, with capacity and allocatable)."""
        res = self.resources()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "corral.io/preset": self.spec.preset,
                    HOLLOW_LABEL: "true",
                },
            },
            "status": {
                "capacity": res,
                "allocatable": res,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }

    # --- admission --------------------------------------------------------------------
    def _largest_zone(self) -> int:
        return max(len(self.topology.cpus_in_numa(n)) for n in self.topology.numa_nodes)

    def _kubelet_cpus(self, count: int, zones: tuple[int, ...] | None) -> CpuSet | None:
        topo = self.topology
        if zones:
            return numa_bound_cpus(topo, zones, self.free, count)
        for n in topo.numa_nodes:  # topology manager: the lowest single zone with room
            got = numa_bound_cpus(topo, [n], self.free, count)
            if got is not None:
                return got
        for s in topo.sockets:  # bigger than a zone: one socket
            got = numa_bound_cpus(
                topo, sorted({c.numa for c in topo.cpus if c.socket == s}), self.free, count
            )
            if got is not None:
                return got
        return None

    def _admit_exclusive(self, pod: PodWorkload) -> tuple[CpuSet | None, bool, bool, bool]:
        count = math.ceil(pod.workload.cpus)
        cpus = self._kubelet_cpus(count, pod.numa_nodes)
        failed = cpus is None
        if cpus is None and len(self.free) >= count:
            cpus = take_cpus(self.topology, self.free, count)
        if cpus is not None:
            self.free = self.free - cpus
        numa = self.topology.numa_nodes_of(cpus) if cpus else ()
        sockets = self.topology.sockets_of(cpus) if cpus else ()
        fits_one_zone = count <= self._largest_zone()
        misaligned = fits_one_zone and (failed or len(numa) > 1)
        return cpus, misaligned, len(numa) > 1, len(sockets) > 1 or (failed and not fits_one_zone)

    def _batch_left(self) -> int:
        capacity = compute(self.snapshot()).batch_cpu
        used = sum(h.pod.requests.batch_cpu_millis for h in self.held.values())
        return capacity - used

    def _gpu(self, pod: PodWorkload) -> tuple[int | None, bool]:
        need = pod.requests.gpu_mem_mib
        if need <= 0:
            return None, False
        totals = {g.index: g.memory_mib for g in self.spec.gpus}
        if pod.gpu_index:
            device: int | None = pod.gpu_index[0]
        else:
            device = next((i for i in totals if totals[i] - self.gpu_used[i] >= need), None)
        if device is None or device not in totals:
            return None, True
        over = self.gpu_used[device] + need > totals[device]
        self.gpu_used[device] += need
        return device, over

    def admit(self, pod_obj: Mapping[str, Any], now: float) -> Admission | None:
        """Admit a pod bound here (None: already admitted or unreadable)."""
        meta = pod_obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if key in self.held:
            return None
        try:
            pod = pod_to_workload(pod_obj, self.topology)
        except (InputError, CorralError):
            return None
        workload = pod.workload
        kind = "other"
        result = Admission(key, self.name, kind, now)
        cpus: CpuSet | None = None
        if pod.requests.gpu_mem_mib > 0:
            kind = "gpu"
        elif workload.policy is Policy.EXCLUSIVE:
            kind = "guaranteed"
        elif workload.qos is Qos.BE:
            kind = "be"
        elif workload.qos is Qos.LC:
            kind = "burstable"
        be_over = False
        if workload.qos is Qos.BE and pod.requests.batch_cpu_millis > 0:
            be_over = pod.requests.batch_cpu_millis > self._batch_left()
        misaligned = multi = cross = False
        if workload.policy is Policy.EXCLUSIVE:
            cpus, misaligned, multi, cross = self._admit_exclusive(pod)
        device, gpu_over = self._gpu(pod)
        self.held[key] = _Held(pod, cpus, device)
        self.version += 1
        return replace(
            result,
            kind=kind,
            misaligned=misaligned,
            multi_zone=multi,
            cross_socket=cross,
            be_over=be_over,
            gpu_over=gpu_over,
        )

    def release(self, key: str) -> None:
        """The pod is gone: free what it held."""
        held = self.held.pop(key, None)
        if held is None:
            return
        if held.cpuset is not None:
            self.free = self.free | held.cpuset
        if held.gpu is not None:
            self.gpu_used[held.gpu] -= held.pod.requests.gpu_mem_mib
        self.version += 1


@dataclass
class HollowCluster:
    """The hollow nodes, one pod watch for all, and the publisher."""

    client: KubeClient
    specs: Sequence[HollowSpec]
    publish_interval_s: float = 1.0
    nodes: dict[str, HollowNode] = field(init=False)
    admissions: list[Admission] = field(default_factory=list)
    publishes: int = 0
    _published: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = {s.name: HollowNode(s) for s in self.specs}

    async def create(self) -> None:
        """Create (or replace) the Node and NRT objects."""
        for node in self.nodes.values():
            await _put(self.client, nodes_path(), node.name, node.node_object())
            await _put(self.client, nrt.PATH, node.name, node.nrt_object())
            self._published[node.name] = node.version

    def _on_pod(self, change: Change) -> None:
        if change.type is ChangeType.SYNCED:
            return
        obj = change.obj
        node = self.nodes.get(str((obj.get("spec") or {}).get("nodeName") or ""))
        if node is None:
            return
        if change.type is ChangeType.DELETED or is_terminal(obj):
            node.release(change.key)
            return
        admitted = node.admit(obj, time.monotonic())
        if admitted is not None:
            self.admissions.append(admitted)

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(self.publish_interval_s)
            dirty = [n for n in self.nodes.values() if self._published.get(n.name) != n.version]
            await asyncio.gather(*(self._publish(n) for n in dirty))

    async def _publish(self, node: HollowNode) -> None:
        version = node.version
        try:
            await self.client.patch(
                f"{nrt.PATH}/{node.name}",
                {
                    "zones": node.nrt_object()["zones"],
                    "attributes": node.nrt_object()["attributes"],
                },
            )
            res = node.resources()
            await self.client.patch(
                node_status_path(node.name), {"status": {"capacity": res, "allocatable": res}}
            )
            self._published[node.name] = version
            self.publishes += 1
        except CorralError as err:
            log.warning("hollow.publish_failed", extra={"node": node.name, "why": str(err)})

    async def start(self) -> None:
        """Start watching pods and publishing; returns once the pod watch has listed."""
        informer = Informer(
            self.client, pods_path(), self._on_pod, params={"fieldSelector": "spec.nodeName!="}
        )
        self._tasks = [
            asyncio.create_task(informer.run(), name="hollow pods"),
            asyncio.create_task(self._publish_loop(), name="hollow publish"),
        ]
        await asyncio.wait_for(informer.synced.wait(), timeout=60)

    async def stop(self) -> None:
        """Stop the tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def delete(self) -> None:
        """Delete the Node and NRT objects."""
        for name in self.nodes:
            for path in (f"{nodes_path()}/{name}", f"{nrt.PATH}/{name}"):
                try:
                    await self.client.delete(path)
                except ApiError as err:
                    if err.status != 404:
                        raise


async def _put(client: KubeClient, collection: str, name: str, body: Mapping[str, Any]) -> None:
    try:
        await client.create(collection, body)
    except ApiError as err:
        if err.status != 409:
            raise
        await client.delete(f"{collection}/{name}")
        await client.create(collection, body)
