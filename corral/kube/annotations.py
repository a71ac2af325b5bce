"""The names corral uses on Kubernetes objects, and parsers of the values people write.

Shared by the node agent (`corral.kube.node`) and the scheduler extender: both must agree on
every name here, so nothing else spells them out.

Pod annotations (user or extender -> agent):

* ``corral.io/cpuset-policy``: ``exclusive`` | ``numa`` | ``shared`` | ``immovable``
* ``corral.io/qos``: ``LC`` | ``BE``
* ``corral.io/pin-cpus``: kernel CPU list (``0-3,8``), the CPUs of an immovable pod
* ``corral.io/numa-nodes``: kernel list of NUMA node ids (``0`` or ``0-1``), written by the
  extender at bind; the agent takes the pod's CPUs from those nodes
* ``corral.io/gpu-index``: list of GPU device indices (``0`` or ``0,2``), written by the
  extender at bind

Pod annotations (agent -> everyone): ``corral.io/cpuset`` (the CPUs the pod holds, kernel
list format) and ``corral.io/numa-nodes`` when absent.

Extended resources: ``corral.io/batch-cpu`` (milli-CPUs, an integer), ``corral.io/batch-memory``
(bytes), ``corral.io/gpu-mem`` (MiB over all of a node's GPUs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from corral.errors import InputError
from corral.placement.workload import MAX_CPU_ID, Policy, Qos
from corral.topology.cpuset import CpuSet

PREFIX: Final = "corral.io/"

CPUSET: Final = "corral.io/cpuset"
NUMA_NODES: Final = "corral.io/numa-nodes"
CPUSET_POLICY: Final = "corral.io/cpuset-policy"
QOS: Final = "corral.io/qos"
PIN_CPUS: Final = "corral.io/pin-cpus"
GPU_INDEX: Final = "corral.io/gpu-index"

BATCH_CPU: Final = "corral.io/batch-cpu"
"""Extended resource: CPU that BE pods may use now, in milli-CPUs (an integer quantity)."""
BATCH_MEMORY: Final = "corral.io/batch-memory"
"""Extended resource: memory that BE pods may use now, in bytes."""
GPU_MEM: Final = "corral.io/gpu-mem"
"""Extended resource: GPU memory in MiB, summed over the node's devices."""

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "corral"

# Event reasons (the ``reason`` field of core/v1 Events the agent writes).
REASON_INVALID_ANNOTATION: Final = "CorralInvalidAnnotation"
REASON_PLACEMENT_FAILED: Final = "CorralPlacementFailed"
REASON_PLACED: Final = "CorralPlaced"
REASON_EVICTED: Final = "CorralEvicted"
REASON_BATCH_SHORT: Final = "CorralBatchCapacityShort"

MAX_LIST_TEXT: Final = 4096
"""Longest value a list annotation may hold."""


class AnnotationError(InputError):
    """An annotation value that cannot be used: names the annotation, the value and the fix."""

    def __init__(self, annotation: str, value: str, problem: str, fix: str) -> None:
        self.annotation = annotation
        self.value = value
        super().__init__(annotation, f"{value[:80]!r}: {problem}", fix)


def _id_list(annotation: str, value: str, fix: str) -> CpuSet:
    if len(value) > MAX_LIST_TEXT:
        raise AnnotationError(annotation, value, f"longer than {MAX_LIST_TEXT} characters", fix)
    if any(int(n) >= MAX_CPU_ID for n in re.findall(r"[0-9]{1,20}", value)):
        raise AnnotationError(annotation, value, f"ids must be below {MAX_CPU_ID}", fix)
    try:
        ids = CpuSet.parse(value.strip())
    except ValueError as err:
        raise AnnotationError(annotation, value, str(err), fix) from None
    if not ids:
        raise AnnotationError(annotation, value, "names no ids", fix)
    return ids


def parse_policy(value: str) -> Policy:
    """The ``corral.io/cpuset-policy`` value as a `Policy`; `AnnotationError` otherwise."""
    try:
        return Policy(value.strip().lower())
    except ValueError:
        raise AnnotationError(
            CPUSET_POLICY,
            value,
            "not a cpuset policy",
            "write one of " + ", ".join(p.value for p in Policy),
        ) from None


def parse_qos(value: str) -> Qos:
    """The ``corral.io/qos`` value (``LC`` or ``BE``, any case) as a `Qos`."""
    text = value.strip().upper()
    if text == Qos.LC.value:
        return Qos.LC
    if text == Qos.BE.value:
        return Qos.BE
    raise AnnotationError(QOS, value, "not a QoS class", "write LC or BE")


def parse_pin_cpus(value: str) -> CpuSet:
    """The CPUs of ``corral.io/pin-cpus`` (kernel list format, at least one CPU)."""
    return _id_list(PIN_CPUS, value, "write a kernel CPU list such as 0-3,8")


def parse_cpuset(value: str) -> CpuSet:
    """The CPUs of ``corral.io/cpuset`` (as the agent wrote it)."""
    return _id_list(CPUSET, value, "remove the annotation: the node agent rewrites it")


def parse_numa_nodes(value: str) -> tuple[int, ...]:
    """The NUMA node ids of ``corral.io/numa-nodes`` (kernel list format: ``0`` or ``0-1``)."""
    return _id_list(NUMA_NODES, value, "write NUMA node ids such as 0 or 0-1").ids()


def parse_gpu_index(value: str) -> tuple[int, ...]:
    """The GPU device indices of ``corral.io/gpu-index`` (``0`` or ``0,2``)."""
    return _id_list(GPU_INDEX, value, "write GPU indices such as 0 or 0,2").ids()


def format_ids(ids: CpuSet | tuple[int, ...] | list[int]) -> str:
    """Ids in kernel list format (``0-3,8``), as every list annotation is written."""
    return str(ids if isinstance(ids, CpuSet) else CpuSet(ids))


def corral_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    """The ``corral.io/`` annotations of an object's metadata (empty when none)."""
    return {k: v for k, v in (annotations or {}).items() if k.startswith(PREFIX)}
