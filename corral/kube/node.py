"""The agent as a Kubernetes node component: the pods bound to this node become workloads,
their placements go back onto the pods, and the node publishes its topology and BE capacity.

One `NodeAgent` per node name (several may share a process and a client, as hollow nodes
do). It runs as a companion of the agent service (`corral.agent.run.serve`):

* an `Informer` watches the pods with ``spec.nodeName=<node>``; every change marks the pod
  dirty and a reconcile loop puts or deletes its workload (`corral.kube.podmap`), up to
  `MAX_IN_FLIGHT` at once, so a burst lands in few coalesced decisions;
* after every committed decision (`AgentService.subscribe`) the pods whose CPUs changed are
  patched with ``corral.io/cpuset`` (and ``corral.io/numa-nodes`` when absent), and the
  NRT object and node status are republished (coalesced, `corral.kube.publish`);
* refusals and bad annotations become Events; BE pods are evicted when batch capacity stays
  short (`corral.kube.evict`).

Pods are the workloads whose id has the form ``<namespace>/<name>``: after a relist, such
workloads with no pod on this node are removed (this is how a restart converges).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from corral.agent.predictions import REQUEST
from corral.agent.service import AgentService
from corral.enforce.locate import locate_pod
from corral.errors import CorralError, InputError, PlacementError
from corral.kube import annotations as ann
from corral.kube import fingerprint
from corral.kube.capacity import NodeCapacity, NodeSnapshot, PlacedPod, build_nrt, compute
from corral.kube.client import (
    ApiError,
    ConnectionFailedError,
    KubeClient,
    pod_path,
    pods_path,
)
from corral.kube.config import GpuDevice, KubeSettings
from corral.kube.events import EventRecorder, Involved
from corral.kube.evict import BeEvictor
from corral.kube.gpus import discover_gpus
from corral.kube.numa import numa_distances, numa_memory
from corral.kube.podmap import (
    PodWorkload,
    container_ids,
    is_terminal,
    numa_bound_cpus,
    pod_to_workload,
)
from corral.kube.publish import NodeResources, NodeStatusWriter, NrtWriter, Publisher
from corral.kube.watch import Change, ChangeType, Informer
from corral.placement.assignment import Placement
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet

log = logging.getLogger(__name__)

COMPONENT: Final = "corral-agent"
MAX_IN_FLIGHT: Final = 256
"""Workload writes one node agent has waiting for a decision at once."""
KUBELET_PREFIX: Final = "kubelet-cpus/"
"""Ids of the pseudo-workloads holding the CPUs kubelet's static policy holds."""


def is_pod_id(workload_id: str) -> bool:
    """True for workload ids of the form ``<namespace>/<name>`` (pods), not kubelet's."""
    return "/" in workload_id and not workload_id.startswith(KUBELET_PREFIX)


@dataclass(slots=True)
class _PodRecord:
    """What the agent knows of one pod."""

    mapped: PodWorkload | None = None
    reported: set[str] = field(default_factory=set)  # problems already sent as Events
    refused: str | None = None  # last refusal sent as an Event
    annotated: str | None = None  # corral.io/cpuset last written


@dataclass(frozen=True, slots=True)
class NodeEnvironment:
    """What the node agent reads once at start: host memory per NUMA node, distances,
    kubelet's exclusive CPUs, the topology manager policy, GPUs."""

    memory_by_numa: Mapping[int, int]
    distances: Mapping[int, Mapping[int, int]] | None
    kubelet_held: CpuSet
    policy: str
    gpus: tuple[GpuDevice, ...]


def read_environment(
    service: AgentService, settings: KubeSettings, *, kubelet_held: CpuSet, policy: str
) -> NodeEnvironment:
    """Read sysfs for ``service``'s topology (blocking: call on the effect executor)."""
    from corral.agent.run import host_memory_bytes  # noqa: PLC0415 - avoids an import cycle

    agent = service.settings
    nodes = list(service.topology.numa_nodes)
    return NodeEnvironment(
        memory_by_numa=numa_memory(agent.sysfs_root, nodes, host_memory_bytes(agent.proc_root)),
        distances=numa_distances(agent.sysfs_root, nodes),
        kubelet_held=kubelet_held,
        policy=policy,
        gpus=discover_gpus(settings.gpus),
    )


class NodeAgent:
    """Kubernetes mode for one node."""

    def __init__(
        self,
        service: AgentService,
        client: KubeClient,
        settings: KubeSettings,
        environment: NodeEnvironment,
    ) -> None:
        self.service = service
        self.client = client
        self.settings = settings
        self.env = environment
        self.node = settings.node_name
        self.pods = Informer(
            client,
            pods_path(),
            self._on_pod,
            params={"fieldSelector": f"spec.nodeName={self.node}"},
        )
        self.events = EventRecorder(client, component=COMPONENT, host=self.node)
        self.nrt = NrtWriter(client, self.node)
        self.node_status = NodeStatusWriter(client, self.node)
        self.publisher = Publisher(
            self._publish,
            min_interval_s=settings.publish_min_interval_s,
            period_s=settings.publish_period_s,
        )
        self.evictor = BeEvictor(self, settings)
        self.patches = 0
        self.put_failures = 0
        self._records: dict[str, _PodRecord] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._annotate = asyncio.Event()
        self._synced_once = False
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._numa_lock = asyncio.Lock()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_capacity: NodeCapacity | None = None

    # --- running ------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled (the companion's body)."""
        self.service.subscribe(self._on_placement)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.pods.run(), name=f"kube-pods-{self.node}")
            group.create_task(self.events.run(), name=f"kube-events-{self.node}")
            group.create_task(self._reconcile_loop(), name=f"kube-reconcile-{self.node}")
            group.create_task(self._annotate_loop(), name=f"kube-annotate-{self.node}")
            group.create_task(self.publisher.run(), name=f"kube-publish-{self.node}")
            group.create_task(self._capacity_loop(), name=f"kube-capacity-{self.node}")
            if self.settings.evict:
                group.create_task(self.evictor.run(), name=f"kube-evict-{self.node}")

    def status(self) -> dict[str, Any]:
        """Counters for diagnosis and the bench."""
        return {
            "node": self.node,
            "pods": len(self.pods.cache),
            "relists": self.pods.relists,
            "reconnects": self.pods.reconnects,
            "bookmarks": self.pods.bookmarks,
            "nrt_writes": self.nrt.writes,
            "nrt_conflicts": self.nrt.conflicts,
            "node_status_writes": self.node_status.writes,
            "annotation_patches": self.patches,
            "events_written": self.events.written,
            "evictions": self.evictor.evictions,
            "watch_error": self.pods.last_error,
        }

    # --- pods -> workloads -------------------------------------------------------------
    def _on_pod(self, change: Change) -> None:
        if change.type is ChangeType.SYNCED:
            self._synced_once = True
            for wid in [v.stored.workload.id for v in self.service.views()]:
                if is_pod_id(wid) and wid not in self.pods.cache:
                    self._dirty.add(wid)
        else:
            self._dirty.add(change.key)
        self._wake.set()

    async def _reconcile_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._synced_once:
                continue
            keys = sorted(self._dirty - self._busy)
            self._dirty.difference_update(keys)
            for key in keys:
                await self._slots.acquire()
                self._busy.add(key)
                task = asyncio.create_task(self._sync(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _sync(self, key: str) -> None:
        try:
            await self._sync_pod(key)
        except (ApiError, ConnectionFailedError) as err:
            log.warning("kube.sync_failed", extra={"pod": key, "error": str(err)})
        except CorralError as err:
            self.put_failures += 1
            log.warning("kube.put_failed", extra={"pod": key, "error": str(err)})
            await asyncio.sleep(1.0)
            self._dirty.add(key)  # retried (overload, store trouble)
        finally:
            self._busy.discard(key)
            self._slots.release()
            if key in self._dirty:
                self._wake.set()

    async def _sync_pod(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        record = self._records.setdefault(key, _PodRecord())
        if pod is None or is_terminal(pod):
            record.mapped = None
            if pod is None:
                self._records.pop(key, None)
            if self.service.view(key) is not None:
                await self.service.delete(key)
                self.publisher.request()
            return
        try:
            mapped = pod_to_workload(pod, self.service.topology, cgroup=await self._pod_cgroup(pod))
        except InputError as err:
            self._warn_once(pod, record, ann.REASON_INVALID_ANNOTATION, str(err))
            return
        for problem in mapped.problems:
            self._warn_once(
                pod,
                record,
                ann.REASON_INVALID_ANNOTATION,
                f"{problem}; corral uses the default for {problem.annotation}",
            )
        record.mapped = mapped
        workload = mapped.workload
        if mapped.numa_nodes and workload.policy is Policy.EXCLUSIVE:
            async with self._numa_lock:
                await self._put_numa_bound(pod, record, mapped)
            return
        await self._put(pod, record, workload)

    async def _pod_cgroup(self, pod: Mapping[str, Any]) -> str | None:
        """The pod cgroup of a pod with several running containers (they share its
        cpuset); None for one container (its own cgroup is used), in a dry run, or when
        not found yet (the next change of the pod retries)."""
        if self.service.enforcer.dry_run or len(container_ids(pod)) < 2:
            return None
        root = self.service.settings.cgroup_root
        hierarchy = root / "cpuset" if (root / "cpuset").is_dir() else root
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        qos = (pod.get("status") or {}).get("qosClass")

        def find() -> str | None:
            try:
                return locate_pod(hierarchy, uid, qos if isinstance(qos, str) else None)
            except InputError:
                return None

        found: str | None = await self.service.effects.run(find)
        return found

    async def _put(self, pod: Mapping[str, Any], record: _PodRecord, workload: Workload) -> None:
        view = self.service.view(workload.id)
        if view is not None and view.stored.workload == workload:
            return
        try:
            result = await self.service.put(workload, wait=True)
        except PlacementError as err:
            self._refused(pod, record, str(err))
            return
        record.refused = None
        if result.view.assignment is not None:
            self._annotate.set()
        self.publisher.request()

    async def _put_numa_bound(
        self, pod: Mapping[str, Any], record: _PodRecord, mapped: PodWorkload
    ) -> None:
        """An exclusive pod told its NUMA nodes: take its CPUs there (as an immovable
        workload), keeping the CPUs it already has there."""
        numa = mapped.numa_nodes or ()
        count = mapped.workload.whole_cpus
        topo = self.service.topology
        on_nodes = CpuSet().union(*(topo.cpus_in_numa(n) for n in numa))
        view = self.service.view(mapped.key)
        assignment = self.service.placement.assignments.get(mapped.key)
        if view is not None and assignment is not None and assignment.cpuset <= on_nodes:
            # Already there (an exclusive pod whose CPUs are on its nodes stays movable).
            kept = view.stored.workload.cpuset
            if view.stored.workload.policy is Policy.IMMOVABLE and kept is not None:
                if len(kept) == count:
                    await self._put(pod, record, mapped.workload.model_copy(update=_pinned(kept)))
                    return
            else:
                await self._put(pod, record, mapped.workload)
                return
        held = CpuSet().union(
            *(
                a.cpuset
                for wid, a in self.service.placement.assignments.items()
                if wid != mapped.key and _holds(self.service, wid)
            )
        )
        free = topo.all_cpus - held - self.service.reserved - self.env.kubelet_held
        cpus = numa_bound_cpus(topo, numa, free, count)
        if cpus is None:
            self._refused(
                pod,
                record,
                f"{mapped.key}: {count} exclusive CPUs do not fit on NUMA nodes "
                f"{ann.format_ids(list(numa))} ({len(free & on_nodes)} free there)",
            )
            return
        await self._put(pod, record, mapped.workload.model_copy(update=_pinned(cpus)))

    def _refused(self, pod: Mapping[str, Any], record: _PodRecord, reason: str) -> None:
        if record.refused != reason:
            record.refused = reason
            self.events.record(
                Involved.of(pod), ann.REASON_PLACEMENT_FAILED, reason, type="Warning"
            )

    def _warn_once(
        self, pod: Mapping[str, Any], record: _PodRecord, reason: str, message: str
    ) -> None:
        if message not in record.reported:
            record.reported.add(message)
            self.events.record(Involved.of(pod), reason, message, type="Warning")

    # --- placements -> pods ------------------------------------------------------------
    def _on_placement(self, placement: Placement) -> None:
        self._annotate.set()
        self.publisher.request()
        for wid, refusal in placement.refusals.items():
            pod = self.pods.cache.get(wid)
            record = self._records.get(wid)
            if pod is not None and record is not None:
                self._refused(pod, record, refusal.reason)

    async def _annotate_loop(self) -> None:
        slots = asyncio.Semaphore(self.settings.annotate_concurrency)
        while True:
            await self._annotate.wait()
            self._annotate.clear()
            jobs = []
            for key, pod in list(self.pods.cache.items()):
                patch = self._annotation_patch(key, pod)
                if patch is not None:
                    jobs.append(self._patch(slots, key, patch))
            if jobs:
                await asyncio.gather(*jobs)

    def _annotation_patch(self, key: str, pod: Mapping[str, Any]) -> dict[str, str] | None:
        assignment = self.service.placement.assignments.get(key)
        view = self.service.view(key)
        if assignment is None or view is None or is_terminal(pod):
            return None
        current = (pod.get("metadata") or {}).get("annotations") or {}
        wanted: dict[str, str] = {}
        cpuset = str(assignment.cpuset)
        if current.get(ann.CPUSET) != cpuset:
            wanted[ann.CPUSET] = cpuset
        if ann.NUMA_NODES not in current:
            nodes = self.service.topology.numa_nodes_of(assignment.cpuset)
            wanted[ann.NUMA_NODES] = ann.format_ids(list(nodes))
        return wanted or None

    async def _patch(self, slots: asyncio.Semaphore, key: str, values: dict[str, str]) -> None:
        namespace, name = key.split("/", 1)
        async with slots:
            try:
                updated = await self.client.patch(
                    pod_path(namespace, name), {"metadata": {"annotations": values}}
                )
            except ApiError as err:
                if err.status != 404:
                    log.warning("kube.annotate_failed", extra={"pod": key, "error": str(err)})
                    self._annotate.set()
                return
            except ConnectionFailedError as err:
                log.warning("kube.annotate_failed", extra={"pod": key, "error": str(err)})
                await asyncio.sleep(1.0)
                self._annotate.set()
                return
        self.patches += 1
        # The watch brings the patched pod too; updating the cache now avoids a re-patch.
        if key in self.pods.cache:
            self.pods.cache[key] = updated

    # --- publishing --------------------------------------------------------------------
    def snapshot(self) -> NodeSnapshot:
        """The inputs of the published numbers, now."""
        placement = self.service.placement
        predictions = self.service.predictor.status().get("workloads", {})
        placed = []
        for key, record in self._records.items():
            if record.mapped is None or key not in self.pods.cache:
                continue
            assignment = placement.assignments.get(key)
            if assignment is None:
                continue  # refused or not decided yet: it uses nothing
            predicted = predictions.get(key)
            cores = None
            if predicted is not None and predicted.get("source") != REQUEST:
                cores = float(predicted["cores"])
            placed.append(PlacedPod(record.mapped, assignment.cpuset, cores))
        control = self.service.control
        return NodeSnapshot(
            topology=self.service.topology,
            reserved=self.service.reserved,
            kubelet_held=self.env.kubelet_held,
            memory_by_numa=self.env.memory_by_numa,
            pods=placed,
            be_cpus=None if control is None else control.runtime.be_cpus,
            cpu_margin=self.settings.batch_cpu_margin,
            memory_margin=self.settings.batch_memory_margin,
            distances=self.env.distances,
            gpus=self.env.gpus,
        )

    def capacity(self) -> NodeCapacity:
        """The node's numbers now."""
        return compute(self.snapshot())

    def bound_pods(self) -> list[tuple[str, str]]:
        """(namespace, name) of the pods bound here and not terminated (the fingerprint's
        set, method "all")."""
        return [
            (str(p["metadata"]["namespace"]), str(p["metadata"]["name"]))
            for p in self.pods.cache.values()
            if not is_terminal(p)
        ]

    async def _publish(self) -> None:
        if not self._synced_once:
            self.publisher.request()
            return
        capacity = self.capacity()
        self._last_capacity = capacity
        wanted = build_nrt(
            self.node,
            capacity,
            distances=self.env.distances,
            policy=self.env.policy,
            fingerprint=fingerprint.sign(self.bound_pods()),
            topology=self.service.topology,
        )
        try:
            await self.nrt.write(wanted)
        except ApiError:
            self.nrt.forget()
            raise
        resources = NodeResources(capacity.batch_cpu, capacity.batch_memory, capacity.gpu_mem_mib)
        try:
            await self.node_status.write(resources)
        except ApiError:
            self.node_status.forget()
            raise

    async def _capacity_loop(self) -> None:
        """Republish when BE capacity moved without a placement change (the controller's
        BE CPUs, predictions): checked every few seconds, cheap."""
        while True:
            await asyncio.sleep(5.0)
            if self._synced_once and self._last_capacity is not None:
                now = self.capacity()
                if (now.batch_cpu, now.batch_memory) != (
                    self._last_capacity.batch_cpu,
                    self._last_capacity.batch_memory,
                ):
                    self.publisher.request()

    def mapped_pods(self) -> list[PodWorkload]:
        """The mapping of every live pod bound here."""
        return [
            r.mapped
            for k, r in self._records.items()
            if r.mapped is not None and k in self.pods.cache
        ]

    def pod_object(self, key: str) -> Mapping[str, Any] | None:
        """The cached pod ``key``."""
        return self.pods.cache.get(key)


def _pinned(cpus: CpuSet) -> dict[str, Any]:
    return {"policy": Policy.IMMOVABLE, "cpuset": cpus, "cpus": float(len(cpus))}


def _holds(service: AgentService, workload_id: str) -> bool:
    view = service.view(workload_id)
    return view is not None and view.stored.workload.policy in (
        Policy.EXCLUSIVE,
        Policy.IMMOVABLE,
    )
