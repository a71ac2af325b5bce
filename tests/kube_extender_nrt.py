"""Builders of Node, NodeResourceTopology and Pod JSON for the extender's tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral.kube import annotations as ann
from corral.kube import nrt
from corral.kube.fingerprint import sign

GIB = 2**30


@dataclass(frozen=True)
class Z:
    """A NUMA zone: CPUs allocatable/available, memory GiB available, socket."""

    cpus: int
    free: float
    socket: int = 0
    mem_gib: int = 64
    batch: int = 0


def nrt_json(
    name: str,
    zones: Sequence[Z],
    *,
    gpus: Sequence[tuple[int, int]] = (),
    pods: Sequence[tuple[str, str]] = (),
    threads_per_core: int | None = 1,
    fingerprint: str | None = "",
) -> dict[str, Any]:
    """An NRT object; GPUs as (total MiB, free MiB); fingerprint "" = the one of ``pods``."""
    out_zones = []
    for i, z in enumerate(zones):
        costs = [
            {
                "name": nrt.numa_zone_name(j),
                "value": 10 if i == j else 12 if z.socket == o.socket else 21,
            }
            for j, o in enumerate(zones)
        ]
        out_zones.append(
            {
                "name": nrt.numa_zone_name(i),
                "type": "Node",
                "costs": costs,
                "resources": [
                    {
                        "name": "cpu",
                        "capacity": str(z.cpus),
                        "allocatable": str(z.cpus),
                        "available": f"{int(z.free * 1000)}m",
                    },
                    {
                        "name": "memory",
                        "capacity": str(z.mem_gib * GIB),
                        "allocatable": str(z.mem_gib * GIB),
                        "available": str(z.mem_gib * GIB),
                    },
                    {
                        "name": ann.BATCH_CPU,
                        "capacity": str(z.batch),
                        "allocatable": str(z.batch),
                        "available": str(z.batch),
                    },
                ],
            }
        )
    for i, (total, free) in enumerate(gpus):
        out_zones.append(
            {
                "name": nrt.gpu_zone_name(i),
                "type": "GPU",
                "resources": [
                    {
                        "name": ann.GPU_MEM,
                        "capacity": str(total),
                        "allocatable": str(total),
                        "available": str(free),
                    }
                ],
            }
        )
    attributes = [
        {"name": "topologyManagerPolicy", "value": "single-numa-node"},
        {"name": "topologyManagerScope", "value": "pod"},
    ]
    if threads_per_core is not None:
        attributes.append({"name": "threadsPerCore", "value": str(threads_per_core)})
    if fingerprint is not None:
        attributes.append({"name": nrt.ATTR_FINGERPRINT, "value": fingerprint or sign(pods)})
        attributes.append({"name": nrt.ATTR_FINGERPRINT_METHOD, "value": "all"})
    return {
        "apiVersion": nrt.API_VERSION,
        "kind": nrt.KIND,
        "metadata": {"name": name},
        "zones": out_zones,
        "attributes": attributes,
    }


def node_json(
    name: str,
    cpus: int,
    *,
    labels: dict[str, str] | None = None,
    gpu_mib: int = 0,
    batch_millis: int = 0,
) -> dict[str, Any]:
    """A Ready Node."""
    res = {
        "cpu": str(cpus),
        "memory": f"{cpus * 8}Gi",
        "pods": "110",
        ann.BATCH_CPU: str(batch_millis),
    }
    if gpu_mib:
        res[ann.GPU_MEM] = str(gpu_mib)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "status": {
            "capacity": res,
            "allocatable": res,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def pod_json(
    name: str,
    *,
    cpus: str | None = None,
    memory: str = "1Gi",
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
    scheduler: str | None = None,
    selector: dict[str, str] | None = None,
    guaranteed: bool = True,
) -> dict[str, Any]:
    """A pod with one container (Guaranteed when ``guaranteed`` and ``cpus`` are set)."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if cpus is not None:
        (limits if guaranteed else requests)["cpu"] = cpus
        (limits if guaranteed else requests)["memory"] = memory
    for k, v in (extra or {}).items():
        limits[k] = v
        requests[k] = v
    spec: dict[str, Any] = {
        "containers": [
            {"name": "c", "image": "pause", "resources": {"limits": limits, "requests": requests}}
        ]
    }
    if scheduler:
        spec["schedulerName"] = scheduler
    if selector:
        spec["nodeSelector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
    }
