"""NodeResourceTopology ``topology.node.k8s.io/v1alpha2`` as frozen values, to and from the
JSON the apiserver stores (the upstream CRD: ``deploy/kubernetes/nrt-crd.yaml``).

One object per node, named after the node, cluster-scoped. Zones:

* NUMA nodes: name ``node-<id>``, type ``Node`` (what the scheduler-plugins
  NodeResourceTopologyMatch plugin and the corral extender read), resources ``cpu`` (CPU
  quantities), ``memory`` (bytes) and ``corral.io/batch-cpu`` / ``corral.io/batch-memory``
  (what BE pods can use on that node now); ``costs`` are the NUMA distances (10 = local).
* GPUs: name ``gpu-<index>``, type ``GPU``, one resource ``corral.io/gpu-mem`` in MiB
  (capacity = device memory, available = capacity minus what bound pods requested);
  attribute ``numa-node`` when the device's NUMA node is known. The NUMA plugin ignores
  zones whose type is not ``Node``.

Quantities are kept as the strings Kubernetes writes (`corral.kube.quantity` reads them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from corral.errors import InputError
from corral.kube.quantity import parse_quantity

GROUP: Final = "topology.node.k8s.io"
VERSION: Final = "v1alpha2"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "NodeResourceTopology"
PLURAL: Final = "noderesourcetopologies"
PATH: Final = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
"""The collection's URL path (cluster-scoped)."""

ZONE_TYPE_NODE: Final = "Node"
ZONE_TYPE_GPU: Final = "GPU"
NUMA_PREFIX: Final = "node-"
GPU_PREFIX: Final = "gpu-"

ATTR_THREADS_PER_CORE: Final = "threadsPerCore"
"""Top-level attribute: the node's SMT width (exclusive pods count whole cores)."""
ATTR_SOCKET: Final = "socket"
"""NUMA zone attribute: the socket the zone sits on (a pod may span one socket's zones)."""
ATTR_POLICY: Final = "topologyManagerPolicy"
ATTR_SCOPE: Final = "topologyManagerScope"
ATTR_FINGERPRINT: Final = "nodeTopologyPodsFingerprint"
ATTR_FINGERPRINT_METHOD: Final = "nodeTopologyPodsFingerprintMethod"
ATTR_GPU_NUMA: Final = "numa-node"


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """One resource of a zone: capacity >= allocatable >= available (quantity strings)."""

    name: str
    capacity: str
    allocatable: str
    available: str

    def to_json(self) -> dict[str, Any]:
        """The ``ResourceInfo`` JSON."""
        return {
            "name": self.name,
            "capacity": self.capacity,
            "allocatable": self.allocatable,
            "available": self.available,
        }


@dataclass(frozen=True, slots=True)
class CostInfo:
    """Distance from the zone holding it to zone ``name`` (SLIT-like, 10 = local)."""

    name: str
    value: int

    def to_json(self) -> dict[str, Any]:
        """The ``CostInfo`` JSON."""
        return {"name": self.name, "value": self.value}


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    """A name/value attribute."""

    name: str
    value: str

    def to_json(self) -> dict[str, Any]:
        """The ``AttributeInfo`` JSON."""
        return {"name": self.name, "value": self.value}


@dataclass(frozen=True, slots=True)
class Zone:
    """A NUMA node (type ``Node``) or a GPU (type ``GPU``)."""

    name: str
    type: str
    resources: tuple[ResourceInfo, ...] = ()
    costs: tuple[CostInfo, ...] = ()
    attributes: tuple[AttributeInfo, ...] = ()
    parent: str = ""

    def resource(self, name: str) -> ResourceInfo | None:
        """The resource called ``name``, or None."""
        return next((r for r in self.resources if r.name == name), None)

    def attribute(self, name: str) -> str | None:
        """The value of attribute ``name``, or None."""
        return next((a.value for a in self.attributes if a.name == name), None)

    @property
    def numa_id(self) -> int | None:
        """The NUMA node id of a ``node-<id>`` zone of type Node, else None."""
        if self.type != ZONE_TYPE_NODE or not self.name.startswith(NUMA_PREFIX):
            return None
        digits = self.name.removeprefix(NUMA_PREFIX)
        return int(digits) if digits.isdigit() else None

    def to_json(self) -> dict[str, Any]:
        """The ``Zone`` JSON (empty lists and parent left out, as the Go types omit them)."""
        data: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.parent:
            data["parent"] = self.parent
        if self.costs:
            data["costs"] = [c.to_json() for c in self.costs]
        if self.attributes:
            data["attributes"] = [a.to_json() for a in self.attributes]
        if self.resources:
            data["resources"] = [r.to_json() for r in self.resources]
        return data


@dataclass(frozen=True, slots=True)
class NodeResourceTopology:
    """One node's topology object. ``resource_version`` is the apiserver's (None: not read)."""

    name: str
    zones: tuple[Zone, ...]
    attributes: tuple[AttributeInfo, ...] = ()
    topology_policies: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    resource_version: str | None = None

    def attribute(self, name: str) -> str | None:
        """The value of top-level attribute ``name``, or None."""
        return next((a.value for a in self.attributes if a.name == name), None)

    def zone(self, name: str) -> Zone | None:
        """The zone called ``name``, or None."""
        return next((z for z in self.zones if z.name == name), None)

    @property
    def numa_zones(self) -> tuple[Zone, ...]:
        """The ``node-<id>`` zones of type Node."""
        return tuple(z for z in self.zones if z.numa_id is not None)

    @property
    def gpu_zones(self) -> tuple[Zone, ...]:
        """The zones of type GPU."""
        return tuple(z for z in self.zones if z.type == ZONE_TYPE_GPU)

    def to_json(self) -> dict[str, Any]:
        """The object as the apiserver takes it (with resourceVersion when known, so an
        update is refused with 409 Conflict if someone wrote in between)."""
        metadata: dict[str, Any] = {"name": self.name}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.resource_version is not None:
            metadata["resourceVersion"] = self.resource_version
        data: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "zones": [z.to_json() for z in self.zones],
        }
        if self.attributes:
            data["attributes"] = [a.to_json() for a in self.attributes]
        if self.topology_policies:
            data["topologyPolicies"] = list(self.topology_policies)
        return data

    def same_content(self, other: NodeResourceTopology) -> bool:
        """True when zones, attributes and policies are equal (metadata aside)."""
        return (self.zones, self.attributes, self.topology_policies) == (
            other.zones,
            other.attributes,
            other.topology_policies,
        )


def numa_zone_name(numa_id: int) -> str:
    """``node-<id>``."""
    return f"{NUMA_PREFIX}{numa_id}"


def gpu_zone_name(index: int) -> str:
    """``gpu-<index>``."""
    return f"{GPU_PREFIX}{index}"


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise InputError(f"{where}.{key}", "must be a list")
    return value


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}.{key}", "must be a string")
    return value


def _quantity(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputError(f"{where}.{key}", "must be a quantity")
    text = str(value)
    parse_quantity(text, field=f"{where}.{key}")
    return text


def _zone_from_json(data: Any, where: str) -> Zone:
    if not isinstance(data, dict):
        raise InputError(where, "must be a mapping")
    resources = tuple(
        ResourceInfo(
            _text(r, "name", f"{where}.resources[{i}]"),
            _quantity(r, "capacity", f"{where}.resources[{i}]"),
            _quantity(r, "allocatable", f"{where}.resources[{i}]"),
            _quantity(r, "available", f"{where}.resources[{i}]"),
        )
        for i, r in enumerate(_list(data, "resources", where))
    )
    costs = tuple(
        CostInfo(_text(c, "name", f"{where}.costs[{i}]"), int(c.get("value", 0)))
        for i, c in enumerate(_list(data, "costs", where))
    )
    return Zone(
        name=_text(data, "name", where),
        type=_text(data, "type", where),
        resources=resources,
        costs=costs,
        attributes=_attributes(_list(data, "attributes", where), f"{where}.attributes"),
        parent=str(data.get("parent") or ""),
    )


def _attributes(items: Sequence[Any], where: str) -> tuple[AttributeInfo, ...]:
    return tuple(
        AttributeInfo(_text(a, "name", f"{where}[{i}]"), _text(a, "value", f"{where}[{i}]"))
        for i, a in enumerate(items)
    )


def nrt_from_json(data: Any) -> NodeResourceTopology:
    """Read an object as the apiserver returns it; `InputError` names a malformed field."""
    if not isinstance(data, dict):
        raise InputError("noderesourcetopology", "must be a mapping")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError("metadata", "must be a mapping")
    return NodeResourceTopology(
        name=_text(metadata, "name", "metadata"),
        zones=tuple(
            _zone_from_json(z, f"zones[{i}]") for i, z in enumerate(_list(data, "zones", ""))
        ),
        attributes=_attributes(_list(data, "attributes", ""), "attributes"),
        topology_policies=tuple(str(p) for p in _list(data, "topologyPolicies", "")),
        labels=dict(metadata.get("labels") or {}),
        resource_version=metadata.get("resourceVersion"),
    )
