"""The extender protocol's bodies (k8s.io/kube-scheduler/extender/v1: Go field names as
JSON keys, matched case-insensitively as Go's decoder does). Bad bodies raise `InputError`
naming the field, which the server answers with a 400."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """A filter or prioritize call: the pod and the candidate nodes, by name (always) and
    as objects when the scheduler sent ``Nodes`` (nodeCacheCapable false)."""

    pod: Mapping[str, Any]
    node_names: tuple[str, ...]
    nodes: tuple[Mapping[str, Any], ...] | None
    names_form: bool


@dataclass(frozen=True, slots=True)
class BindingArgs:
    """A bind call."""

    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.pod_namespace}/{self.pod_name}"


def _fold(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InputError(what, "the body must be a JSON object")
    return {str(k).lower(): v for k, v in body.items()}


def _node_name(node: Any, i: int) -> str:
    if not isinstance(node, dict):
        raise InputError(f"Nodes.items[{i}]", "must be a Node object")
    meta = node.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise InputError(f"Nodes.items[{i}].metadata.name", "must be a non-empty string")
    return name


def parse_args(body: Any) -> ExtenderArgs:
    """``ExtenderArgs`` (``Pod`` and ``NodeNames`` or ``Nodes``)."""
    data = _fold(body, "ExtenderArgs")
    pod = data.get("pod")
    if not isinstance(pod, dict):
        raise InputError("Pod", "must be a Pod object", "send ExtenderArgs with a Pod")
    names = data.get("nodenames")
    nodes = data.get("nodes")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)
    ):
        raise InputError("NodeNames", "must be a list of node names")
    node_items: tuple[Mapping[str, Any], ...] | None = None
    if nodes is not None:
        if not isinstance(nodes, dict) or not isinstance(nodes.get("items", []), list):
            raise InputError("Nodes", "must be a NodeList object with items")
        node_items = tuple(nodes.get("items") or [])
        listed = [_node_name(n, i) for i, n in enumerate(node_items)]
    if names is None and node_items is None:
        raise InputError("NodeNames", "neither NodeNames nor Nodes is set", "send one of them")
    if names is not None:
        return ExtenderArgs(pod, tuple(names), node_items, names_form=True)
    return ExtenderArgs(pod, tuple(listed), node_items, names_form=False)


def parse_binding(body: Any) -> BindingArgs:
    """``ExtenderBindingArgs`` (``PodName``, ``PodNamespace``, ``PodUID``, ``Node``)."""
    data = _fold(body, "ExtenderBindingArgs")
    values = {}
    for field in ("PodName", "PodNamespace", "PodUID", "Node"):
        value = data.get(field.lower())
        required = field != "PodUID"
        if value is None and not required:
            value = ""
        if not isinstance(value, str) or (required and not value):
            raise InputError(
                field, "must be a non-empty string" if required else "must be a string"
            )
        values[field] = value
    return BindingArgs(values["PodName"], values["PodNamespace"], values["PodUID"], values["Node"])


def filter_result(
    args: ExtenderArgs,
    passed: Sequence[str],
    failed: Mapping[str, str],
    unresolvable: Mapping[str, str],
) -> dict[str, Any]:
    """``ExtenderFilterResult`` in the form of the call. Unresolvable nodes are listed in
    both maps: schedulers before FailedAndUnresolvableNodes existed (1.20) read only
    FailedNodes; newer ones let the unresolvable map win."""
    keep = set(passed)
    nodes = None
    if args.nodes is not None:
        items = [n for n in args.nodes if (n.get("metadata") or {}).get("name") in keep]
        nodes = {"metadata": {}, "items": items}
    return {
        "Nodes": nodes,
        "NodeNames": list(passed) if args.names_form else None,
        "FailedNodes": {**failed, **unresolvable},
        "FailedAndUnresolvableNodes": dict(unresolvable),
        "Error": "",
    }


def priorities(order: Sequence[str], scores: Mapping[str, int]) -> list[dict[str, Any]]:
    """``HostPriorityList`` in the call's node order."""
    return [{"Host": name, "Score": int(scores.get(name, 0))} for name in order]
