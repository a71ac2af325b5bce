"""A pod bound to this node -> the one corral workload that stands for it.

Topology scope "pod": all of a pod's containers share its cpuset. The id is
``<namespace>/<name>``. CPU and memory requests follow kubelet's rule for the effective pod
request: ``max(sum of app containers, largest init container) + overhead`` (a request
defaults to its limit, as the apiserver defaults it). Defaults by Kubernetes QoS class:

* Guaranteed with whole CPUs: LC, ``exclusive``;
* other Guaranteed and Burstable: LC, ``shared``;
* BestEffort, or any pod requesting ``corral.io/batch-cpu``: BE, ``shared``.

The annotations ``corral.io/cpuset-policy``, ``corral.io/qos`` and ``corral.io/pin-cpus``
override them. A bad annotation is reported (`PodWorkload.problems`, each naming the
annotation and the fix) and the defaults stand for it; a pod never fails to map because
of its annotations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any

from corral.errors import InputError
from corral.kube import annotations as ann
from corral.kube.annotations import AnnotationError
from corral.kube.quantity import parse_quantity
from corral.placement.kubelet import take_cpus
from corral.placement.workload import (
    MAX_ID_LENGTH,
    MAX_MEMORY_BYTES,
    MIN_CPUS,
    Policy,
    Qos,
    Workload,
    check_workload_id,
)
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_CONTAINER_ID = re.compile(r"^(docker|containerd|cri-o)://([0-9a-f]{12,64})$")


class KubeQos(StrEnum):
    """Kubernetes pod QoS classes."""

    GUARANTEED = "Guaranteed"
    BURSTABLE = "Burstable"
    BEST_EFFORT = "BestEffort"


@dataclass(frozen=True, slots=True)
class Requests:
    """A pod's effective requests (kubelet's rule)."""

    cpu: Fraction
    memory: int
    batch_cpu_millis: int
    batch_memory: int
    gpu_mem_mib: int


@dataclass(frozen=True, slots=True)
class PodWorkload:
    """What corral makes of one pod."""

    key: str  # namespace/name
    uid: str
    workload: Workload
    kube_qos: KubeQos
    requests: Requests
    numa_nodes: tuple[int, ...] | None
    gpu_index: tuple[int, ...] | None
    priority: int
    container_ids: tuple[str, ...]
    problems: tuple[AnnotationError, ...]

    @property
    def namespace(self) -> str:
        """The pod's namespace."""
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        """The pod's name."""
        return self.key.split("/", 1)[1]


def _quantity(resources: Mapping[str, Any] | None, name: str) -> Fraction | None:
    if not resources or name not in resources:
        return None
    return parse_quantity(resources[name], field=name)


def _container_request(container: Mapping[str, Any], name: str) -> Fraction:
    resources = container.get("resources") or {}
    request = _quantity(resources.get("requests"), name)
    if request is None:
        request = _quantity(resources.get("limits"), name)
    return request or Fraction(0)


def effective_request(spec: Mapping[str, Any], name: str) -> Fraction:
    """kubelet's effective pod request of resource ``name``: ``max(sum(app containers),
    max(init containers)) + overhead``."""
    apps = sum((_container_request(c, name) for c in spec.get("containers") or []), Fraction(0))
    inits = [_container_request(c, name) for c in spec.get("initContainers") or []]
    overhead = _quantity(spec.get("overhead"), name) or Fraction(0)
    return max([apps, *inits]) + overhead


def kube_qos(spec: Mapping[str, Any]) -> KubeQos:
    """The pod's QoS class, computed as kubelet does (GetPodQOS): no requests or limits of
    cpu or memory anywhere -> BestEffort; every container limiting both with requests equal
    to limits -> Guaranteed; else Burstable."""
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        for name in ("cpu", "memory"):
            request = _quantity(requests, name)
            limit = _quantity(limits, name)
            if (request is not None and request != 0) or (limit is not None and limit != 0):
                any_set = True
            if limit is None or (request is not None and request != limit):
                guaranteed = False
    if not any_set:
        return KubeQos.BEST_EFFORT
    return KubeQos.GUARANTEED if guaranteed else KubeQos.BURSTABLE


def pod_requests(spec: Mapping[str, Any]) -> Requests:
    """The effective requests of cpu, memory and corral's extended resources."""
    return Requests(
        cpu=effective_request(spec, "cpu"),
        memory=int(effective_request(spec, "memory")),
        batch_cpu_millis=int(effective_request(spec, ann.BATCH_CPU)),
        batch_memory=int(effective_request(spec, ann.BATCH_MEMORY)),
        gpu_mem_mib=int(effective_request(spec, ann.GPU_MEM)),
    )


def container_ids(pod: Mapping[str, Any]) -> tuple[str, ...]:
    """The runtime ids (``containerd://<hex>`` form) of the pod's app containers that have
    one, in status order."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    found = []
    for status in statuses:
        cid = str(status.get("containerID") or "")
        if _CONTAINER_ID.match(cid):
            found.append(cid)
    return tuple(found)


def is_terminal(pod: Mapping[str, Any]) -> bool:
    """True when the pod's containers have all stopped for good (Succeeded or Failed)."""
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def pod_key(pod: Mapping[str, Any]) -> str:
    """``namespace/name``."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _overrides(
    annotations: Mapping[str, str], topology: Topology, problems: list[AnnotationError]
) -> tuple[Policy | None, Qos | None, CpuSet | None, tuple[int, ...] | None]:
    def attempt(name: str, parse: Any) -> Any:
        if name not in annotations:
            return None
        try:
            return parse(annotations[name])
        except AnnotationError as err:
            problems.append(err)
            return None

    policy = attempt(ann.CPUSET_POLICY, ann.parse_policy)
    qos = attempt(ann.QOS, ann.parse_qos)
    pin = attempt(ann.PIN_CPUS, ann.parse_pin_cpus)
    numa = attempt(ann.NUMA_NODES, ann.parse_numa_nodes)
    if pin is not None and not pin <= topology.all_cpus:
        problems.append(
            AnnotationError(
                ann.PIN_CPUS,
                annotations[ann.PIN_CPUS],
                f"CPUs {pin - topology.all_cpus} are not on this node",
                f"pick CPUs from {topology.all_cpus}",
            )
        )
        pin = None
    if numa is not None and not set(numa) <= set(topology.numa_nodes):
        problems.append(
            AnnotationError(
                ann.NUMA_NODES,
                annotations[ann.NUMA_NODES],
                f"NUMA nodes {sorted(set(numa) - set(topology.numa_nodes))} are not on this node",
                f"pick from {ann.format_ids(list(topology.numa_nodes))}",
            )
        )
        numa = None
    return policy, qos, pin, numa


def _choose_policy(
    default: Policy,
    *,
    policy: Policy | None,
    pin: CpuSet | None,
    cpus: float,
    annotations: Mapping[str, str],
    problems: list[AnnotationError],
) -> Policy:
    if policy is None:
        return Policy.IMMOVABLE if pin is not None else default
    if policy is Policy.EXCLUSIVE and not float(cpus).is_integer():
        problems.append(
            AnnotationError(
                ann.CPUSET_POLICY,
                annotations[ann.CPUSET_POLICY],
                f"exclusive needs whole CPUs and the pod requests {cpus:g}",
                "request a whole number of CPUs, or use shared",
            )
        )
        return default if default is not Policy.EXCLUSIVE else Policy.SHARED
    if policy is Policy.IMMOVABLE and pin is None:
        problems.append(
            AnnotationError(
                ann.CPUSET_POLICY,
                annotations[ann.CPUSET_POLICY],
                f"immovable needs the pod's CPUs in {ann.PIN_CPUS}",
                f"add {ann.PIN_CPUS}: 0-1 (say), or use another policy",
            )
        )
        return default
    return policy


def pod_to_workload(
    pod: Mapping[str, Any],
    topology: Topology,
    *,
    cgroup: str | None = None,
    max_memory_bytes: int = MAX_MEMORY_BYTES,
) -> PodWorkload:
    """The workload of ``pod`` (a core/v1 Pod as JSON). Raises `InputError` only when the
    pod cannot be a workload at all (an id longer than corral takes, a malformed
    request quantity); annotation problems are returned, not raised."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    key = pod_key(pod)
    if len(key) > MAX_ID_LENGTH:
        raise InputError("metadata.name", f"{key}: longer than {MAX_ID_LENGTH} characters")
    check_workload_id(key)
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    problems: list[AnnotationError] = []
    requests = pod_requests(spec)
    qos_class = kube_qos(spec)
    policy, qos, pin, numa = _overrides(annotations, topology, problems)
    be = qos_class is KubeQos.BEST_EFFORT or requests.batch_cpu_millis > 0
    default_qos = Qos.BE if be else Qos.LC
    whole = requests.cpu > 0 and requests.cpu.denominator == 1
    default_policy = (
        Policy.EXCLUSIVE if qos_class is KubeQos.GUARANTEED and whole and not be else Policy.SHARED
    )
    cpu = float(requests.cpu)
    if be and requests.batch_cpu_millis > 0:
        cpu = max(cpu, requests.batch_cpu_millis / 1000)
    cpus = min(max(cpu, MIN_CPUS), float(len(topology.all_cpus)))
    chosen = _choose_policy(
        default_policy,
        policy=policy,
        pin=pin,
        cpus=cpus,
        annotations=annotations,
        problems=problems,
    )
    if chosen is Policy.IMMOVABLE and pin is not None:
        cpus = float(len(pin))
    elif pin is not None:
        problems.append(
            AnnotationError(
                ann.PIN_CPUS,
                annotations[ann.PIN_CPUS],
                f"only immovable pods are pinned; this one is {chosen}",
                f"remove {ann.PIN_CPUS} or set {ann.CPUSET_POLICY}: immovable",
            )
        )
    memory = requests.memory + requests.batch_memory
    ids = container_ids(pod)
    workload = Workload(
        id=key,
        qos=qos or default_qos,
        cpus=cpus,
        policy=chosen,
        cpuset=pin if chosen is Policy.IMMOVABLE else None,
        memory_request=min(memory, max_memory_bytes) if memory > 0 else None,
        cgroup=cgroup,
        container_id=None if cgroup is not None or len(ids) != 1 else ids[0],
    )
    gpu_index = None
    if ann.GPU_INDEX in annotations:
        try:
            gpu_index = ann.parse_gpu_index(annotations[ann.GPU_INDEX])
        except AnnotationError as err:
            problems.append(err)
    return PodWorkload(
        key=key,
        uid=str(meta.get("uid") or ""),
        workload=workload,
        kube_qos=qos_class,
        requests=requests,
        numa_nodes=numa,
        gpu_index=gpu_index,
        priority=int(spec.get("priority") or 0),
        container_ids=ids,
        problems=tuple(problems),
    )


def numa_bound_cpus(
    topology: Topology, numa_nodes: Sequence[int], free: CpuSet, count: int
) -> CpuSet | None:
    """``count`` CPUs of ``free`` on ``numa_nodes`` packed from the lowest cores (kubelet's
    order), or None when those nodes have fewer free CPUs."""
    pool = CpuSet().union(*(topology.cpus_in_numa(n) for n in numa_nodes)) & free
    if len(pool) < count:
        return None
    return take_cpus(topology, pool, count)
