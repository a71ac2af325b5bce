"""What the extender needs of a pod: its policy, QoS and effective requests.

Derived exactly as the node agent does (`corral.kube.podmap`: kubelet's effective request,
Kubernetes QoS, the defaults Guaranteed-with-whole-CPUs -> LC ``exclusive``, BE for
BestEffort pods and pods requesting ``corral.io/batch-cpu``, the ``corral.io/cpuset-policy``
and ``corral.io/qos`` overrides). The node agent's `pod_to_workload` needs the node's
topology, which a pod being scheduled does not have yet, so the topology-free part is
repeated here on top of the same helpers.

Pods with policy ``exclusive`` or ``numa`` are *managed*: they must fit one NUMA zone (or
the zones of one socket). ``corral.io/allow-cross-socket: "true"`` lets a managed pod that
fits no socket span sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from corral.errors import InputError
from corral.kube import annotations as ann
from corral.kube.annotations import AnnotationError
from corral.kube.podmap import KubeQos, kube_qos, pod_requests
from corral.placement.workload import Policy, Qos

ALLOW_CROSS_SOCKET: Final = "corral.io/allow-cross-socket"
"""Pod annotation: ``"true"`` lets a pod bigger than every socket take zones of two."""

MANAGED_POLICIES: Final = frozenset({Policy.EXCLUSIVE, Policy.NUMA})


@dataclass(frozen=True, slots=True)
class PodRequest:
    """A pod as the extender sees it. CPU in milli-CPUs, memory in bytes, GPU memory in MiB."""

    namespace: str
    name: str
    uid: str
    policy: Policy
    qos: Qos
    kube_qos: KubeQos
    cpu_millis: int
    memory_bytes: int
    gpu_mem_mib: int
    batch_cpu_millis: int
    allow_cross_socket: bool = False
    problem: str = ""
    """A corral annotation the pod carries that cannot be used (empty: none)."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def managed(self) -> bool:
        """True when the pod's CPUs must come from one NUMA zone (or one socket)."""
        return self.policy in MANAGED_POLICIES

    @property
    def exclusive(self) -> bool:
        """True when the pod holds whole CPUs (whole cores on SMT nodes)."""
        return self.policy is Policy.EXCLUSIVE


def _annotation(annotations: Mapping[str, str], name: str, parse: Any, problems: list[str]) -> Any:
    if name not in annotations:
        return None
    try:
        return parse(str(annotations[name]))
    except AnnotationError as err:
        problems.append(str(err))
        return None


def pod_request(pod: Mapping[str, Any]) -> PodRequest:
    """The request of ``pod`` (core/v1 Pod JSON). `InputError` names a malformed field
    (a quantity that is not one, metadata that is not a mapping); a bad corral annotation
    is kept in `PodRequest.problem` and the defaults stand for it."""
    meta = pod.get("metadata")
    spec = pod.get("spec")
    if not isinstance(meta, Mapping):
        raise InputError("Pod.metadata", "must be an object")
    if not isinstance(spec, Mapping):
        raise InputError("Pod.spec", "must be an object")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InputError("Pod.metadata.name", "must be a non-empty string")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise InputError("Pod.metadata.annotations", "must be an object of strings")
    for field in ("containers", "initContainers"):
        value = spec.get(field)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(c, Mapping) for c in value)
        ):
            raise InputError(f"Pod.spec.{field}", "must be a list of containers")
    try:
        requests = pod_requests(spec)
        qos_class = kube_qos(spec)
    except InputError as err:
        raise InputError(f"Pod.spec.containers[].resources.{err.field}", err.problem) from err
    except (AttributeError, TypeError) as err:
        raise InputError("Pod.spec.containers[].resources", "must map names to quantities") from err
    problems: list[str] = []
    policy = _annotation(annotations, ann.CPUSET_POLICY, ann.parse_policy, problems)
    qos = _annotation(annotations, ann.QOS, ann.parse_qos, problems)
    be = qos_class is KubeQos.BEST_EFFORT or requests.batch_cpu_millis > 0
    whole = requests.cpu > 0 and requests.cpu.denominator == 1
    default = (
        Policy.EXCLUSIVE if qos_class is KubeQos.GUARANTEED and whole and not be else Policy.SHARED
    )
    if policy is Policy.EXCLUSIVE and not whole:
        problems.append(
            f"{ann.CPUSET_POLICY}: exclusive needs whole CPUs and the pod requests "
            f"{float(requests.cpu):g} (request a whole number of CPUs, or use shared)"
        )
        policy = None
    if policy is Policy.IMMOVABLE:
        policy = None  # pinned by the node agent: the extender does not place its CPUs
    cross = str(annotations.get(ALLOW_CROSS_SOCKET, "")).strip().lower() == "true"
    cpu_millis = -((-requests.cpu.numerator * 1000) // requests.cpu.denominator)
    return PodRequest(
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        uid=str(meta.get("uid") or ""),
        policy=policy or default,
        qos=qos or (Qos.BE if be else Qos.LC),
        kube_qos=qos_class,
        cpu_millis=cpu_millis,
        memory_bytes=requests.memory,
        gpu_mem_mib=requests.gpu_mem_mib,
        batch_cpu_millis=requests.batch_cpu_millis,
        allow_cross_socket=cross,
        problem="; ".join(problems),
    )
