"""The three verbs. Filter and prioritize are pure reads of the watched view (synchronous,
microseconds per node); bind reserves, then creates the Binding, which carries the
``corral.io/numa-nodes`` / ``corral.io/gpu-index`` annotations: the apiserver copies a
Binding's annotations onto the pod in the write that binds it (one request, atomic).

Bind is idempotent: a retry for a pod already bound to the asked node succeeds, a retry
after a lost answer reuses the reservation; a bind that fails releases what it reserved
(except when the apiserver could not be reached: the Binding may have been made, so the
reservation stays until the pod is seen or deleted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from corral.errors import InputError
from corral.kube import annotations as ann
from corral.kube.client import ApiError, ConnectionFailedError, pod_path
from corral.kube.extender.config import ExtenderSettings
from corral.kube.extender.fit import Placement, Refusal, fit
from corral.kube.extender.podspec import PodRequest, pod_request
from corral.kube.extender.reserve import Reservation
from corral.kube.extender.score import prioritize
from corral.kube.extender.view import ClusterView, PodRecord, pod_record
from corral.kube.extender.wire import (
    BindingArgs,
    ExtenderArgs,
    filter_result,
    priorities,
)
from corral.placement.workload import Qos

log = logging.getLogger(__name__)

CONFLICT = 409
NOT_FOUND = 404


class Api(Protocol):
    """The apiserver calls bind makes (`corral.kube.client.KubeClient` has them)."""

    async def get(self, path: str, **params: str | int) -> dict[str, Any]:
        """GET."""

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST."""


class Extender:
    """Filter, prioritize and bind over one `ClusterView`."""

    def __init__(self, view: ClusterView, api: Api, settings: ExtenderSettings) -> None:
        self.view = view
        self.api = api
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self.binds = 0
        self.bind_retries_reused = 0
        self.bind_failures = 0
        self.bind_decision_s: deque[float] = deque(maxlen=100_000)
        """Seconds each bind spent deciding and booking (without its apiserver calls)."""

    def filter(self, args: ExtenderArgs) -> dict[str, Any]:
        """``ExtenderFilterResult`` for ``args``; `InputError` for a pod it cannot read."""
        pod = pod_request(args.pod)
        passed: list[str] = []
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        for name in args.node_names:
            result = self._fit(name, pod)
            if isinstance(result, Refusal):
                (unresolvable if result.unresolvable else failed)[name] = result.reason
            else:
                passed.append(name)
        return filter_result(args, passed, failed, unresolvable)

    def _fit(self, node: str, pod: PodRequest) -> Placement | Refusal:
        """`fit` on the node's topology, then, for BE pods, its batch-cpu left."""
        result = fit(self.view.topo(node), pod)
        if isinstance(result, Placement) and pod.qos is Qos.BE and pod.batch_cpu_millis > 0:
            left = self.view.batch_left(node)
            if left < pod.batch_cpu_millis:
                return Refusal(
                    f"corral: {ann.BATCH_CPU} left on the node is below the pod's "
                    f"{pod.batch_cpu_millis}m (LC pods just placed there take BE capacity)",
                    unresolvable=False,
                )
        return result

    def prioritize(self, args: ExtenderArgs) -> list[dict[str, Any]]:
        """``HostPriorityList`` (0-10) for ``args``."""
        pod = pod_request(args.pod)
        nodes = {name: self.view.topo(name) for name in args.node_names}
        batch_left = {name: self.view.batch_left(name) for name in args.node_names}
        scores = prioritize(
            pod,
            nodes,
            batch_left,
            strategy=self.settings.scoring_strategy,
            weights=self.settings.weights,
        )
        return priorities(args.node_names, scores)

    async def bind(self, args: BindingArgs) -> dict[str, Any]:
        """``ExtenderBindingResult``: ``{"Error": ""}`` once the pod is bound to the node."""
        lock = self._locks.setdefault(args.key, asyncio.Lock())
        try:
            async with lock:
                return {"Error": await self._bind(args)}
        finally:
            if not lock.locked():
                self._locks.pop(args.key, None)

    async def _record(self, args: BindingArgs) -> PodRecord | str:
        record = self.view.pods.get(args.key)
        if record is not None and (not args.pod_uid or record.uid == args.pod_uid):
            return record
        try:
            return pod_record(await self.api.get(pod_path(args.pod_namespace, args.pod_name)))
        except ApiError as err:
            if err.status == NOT_FOUND:
                return f"pod {args.key} not found"
            return f"cannot read pod {args.key}: {err}"
        except ConnectionFailedError as err:
            return f"cannot read pod {args.key}: {err}"

    def _plan(self, record: PodRecord, args: BindingArgs) -> Placement | str:
        held = self.view.cache.get(args.key)
        if held is not None and held.node == args.node and held.uid == record.uid:
            self.bind_retries_reused += 1
            return held.placement
        self.view.cache.release(args.key)
        if record.request is None:
            return Placement()
        request = record.request
        result = self._fit(args.node, request)
        if isinstance(result, Refusal):
            return result.reason
        self.view.cache.reserve(
            Reservation(
                namespace=record.namespace,
                name=record.name,
                uid=record.uid,
                node=args.node,
                placement=result,
                batch_cpu_millis=request.batch_cpu_millis,
                lc_cpu_millis=request.cpu_millis if request.qos is Qos.LC else 0,
            )
        )
        return result

    async def _bind(self, args: BindingArgs) -> str:
        record = await self._record(args)
        if isinstance(record, str):
            return record
        if args.pod_uid and record.uid and record.uid != args.pod_uid:
            return f"pod {args.key} is now uid {record.uid}, not {args.pod_uid} (recreated)"
        if record.node:
            if record.node == args.node:
                return ""  # a retry of a bind that went through
            return f"pod {args.key} is already bound to {record.node}"
        start = time.perf_counter()
        plan = self._plan(record, args)
        self.bind_decision_s.append(time.perf_counter() - start)
        if isinstance(plan, str):
            self.bind_failures += 1
            return plan
        error = await self._write(args, record, plan)
        if error:
            self.bind_failures += 1
            return error
        self.binds += 1
        annotations = dict(record.annotations)
        annotations.update(_annotations(plan))
        self.view.mark_bound(replace(record, node=args.node, annotations=annotations))
        return ""

    async def _write(self, args: BindingArgs, record: PodRecord, plan: Placement) -> str:
        path = pod_path(args.pod_namespace, args.pod_name)
        try:
            await self.api.create(f"{path}/binding", _binding(args, record.uid, plan))
        except ApiError as err:
            if err.status == CONFLICT and await self._bound_to(path, args.node):
                return ""
            self.view.cache.release(args.key)
            return f"binding {args.key} to {args.node}: {err}"
        except ConnectionFailedError as err:
            # The Binding may exist: keep the reservation; a retry or the watch settles it.
            return f"binding {args.key} to {args.node}: {err}"
        return ""

    async def _bound_to(self, path: str, node: str) -> bool:
        try:
            pod = await self.api.get(path)
        except (ApiError, ConnectionFailedError):
            return False
        return (pod.get("spec") or {}).get("nodeName") == node


def _annotations(plan: Placement) -> dict[str, str]:
    out = {}
    if plan.zones:
        out[ann.NUMA_NODES] = ann.format_ids(list(plan.zones))
    if plan.gpu is not None:
        out[ann.GPU_INDEX] = ann.format_ids([plan.gpu])
    return out


def _binding(args: BindingArgs, uid: str, plan: Placement) -> dict[str, Any]:
    """The Binding; its annotations are copied onto the pod by the apiserver in the same
    write that sets ``spec.nodeName`` (BindingREST), so the node agent never sees the pod
    bound without its NUMA zones."""
    meta: dict[str, Any] = {"name": args.pod_name, "namespace": args.pod_namespace}
    if uid:
        meta["uid"] = uid
    wanted = _annotations(plan)
    if wanted:
        meta["annotations"] = wanted
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": meta,
        "target": {"apiVersion": "v1", "kind": "Node", "name": args.node},
    }


__all__ = ["Extender", "InputError"]
