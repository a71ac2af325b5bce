"""The web view's routes: the page, its assets and the JSON it polls.

* ``GET /ui`` (and ``/ui/``) the page, ``GET /ui/static/{app.js,style.css}`` its assets:
  static, no data, served without a token so the page can ask for one.
* ``GET /ui/api/host``: the topology, every workload (spec, status, CPUs, the reason they
  were chosen, predicted P95, usage, pool), the pools, the reserved CPUs, each CPU's
  estimated usage and the controller's state (None without a controller).
* ``GET /ui/api/history?since=<s>&after=<seq>``: the time view's points and log entries
  (`corral.agent.ui.history.HostHistory`).

The API routes need the same bearer token as the rest of the agent's API. Every answer is
built from memory (``AgentService.status()``, ``workloads_json()``, the placement).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from corral.agent.service import AgentService
from corral.agent.ui.history import DEFAULT_KEEP_S, DEFAULT_PERIOD_S, HostHistory
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The page's files (``corral/agent/ui/static/``) and their media types."""

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Content-Security-Policy of the page: its own files only, nothing inline, no CDN."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file of the page, read once."""

    body: bytes
    media_type: str


def load_assets() -> dict[str, Asset]:
    """The page's files from the installed package (`ASSETS`); `FileNotFoundError` names
    a file missing from a broken install."""
    root = resources.files("corral.agent.ui").joinpath("static")
    return {name: Asset(root.joinpath(name).read_bytes(), media) for name, media in ASSETS.items()}


def topology_json(topology: Topology) -> dict[str, Any]:
    """The topology as the page draws it: each CPU as ``[id, core, socket, numa, l3]``."""
    return {
        "name": topology.name,
        "describe": topology.describe(),
        "threads_per_core": topology.max_threads_per_core,
        "cpus": [[c.id, c.core, c.socket, c.numa, c.l3] for c in topology.cpus],
    }


def pool_of(row: Mapping[str, Any], topology: Topology) -> str | None:
    """The pool a placed workload's CPUs come from: ``exclusive``, ``immovable``,
    ``shared`` or ``numa-N`` (None while it has no CPUs)."""
    cpuset = row.get("cpuset")
    if not cpuset:
        return None
    policy = row.get("spec", {}).get("policy", "shared")
    if policy == "numa":
        nodes = topology.numa_nodes_of(CpuSet.parse(cpuset))
        return f"numa-{nodes[0]}" if len(nodes) == 1 else "shared"
    return str(policy)


def cpu_usage(
    topology: Topology,
    rows: Sequence[Mapping[str, Any]],
    effective: Mapping[str, CpuSet],
) -> dict[str, float]:
    """Each CPU's estimated busy fraction (0..1), CPU id (as text) -> fraction, for the
    CPUs of workloads with a usage sample: each workload's sampled cores spread evenly
    over the CPUs it runs on (``effective`` overrides its cpuset, e.g. the BE box's CPUs
    under the controller). The agent samples usage per cgroup, not per CPU."""
    busy: dict[int, float] = {}
    for row in rows:
        used = row.get("usage_cores")
        cpuset = row.get("cpuset")
        if used is None or not cpuset:
            continue
        cpus = effective.get(row["id"]) or CpuSet.parse(cpuset)
        cpus = cpus & topology.all_cpus
        if not cpus:
            continue
        share = float(used) / len(cpus)
        for cpu in cpus:
            busy[cpu] = busy.get(cpu, 0.0) + share
    return {str(cpu): round(min(value, 1.0), 4) for cpu, value in sorted(busy.items())}


def _control_json(status: Mapping[str, Any]) -> dict[str, Any] | None:
    control = status.get("control")
    if not isinstance(control, Mapping):
        return None
    be = control.get("be") or {}
    return {
        "mode": control.get("mode"),
        "reason": control.get("reason"),
        "slack": control.get("slack"),
        "load": control.get("load"),
        "be_cpus": be.get("cpus"),
        "be_cores": be.get("cores"),
        "be_weight": be.get("weight"),
        "be_pool": control.get("be_pool"),
        "be_cgroup": control.get("be_cgroup"),
        "lc": control.get("lc") or [],
        "signals": control.get("signals") or [],
        "frozen": control.get("frozen") or [],
    }


def host_json(service: AgentService) -> dict[str, Any]:
    """``GET /ui/api/host`` (see the module docstring); from memory only."""
    status = service.status()
    topology = service.topology
    predictions = (status.get("predictions") or {}).get("workloads") or {}
    control = _control_json(status)
    be_box = set(service.be_box_workloads()) if control is not None else set()
    effective: dict[str, CpuSet] = {}
    if control is not None and control["be_cpus"] is not None:
        be_cpus = CpuSet.parse(control["be_cpus"])
        effective = dict.fromkeys(be_box, be_cpus)
    rows = service.workloads_json()
    workloads = []
    for row in rows:
        spec = row.get("spec", {})
        wid = row["id"]
        workloads.append(
            {
                "id": wid,
                "qos": spec.get("qos"),
                "policy": spec.get("policy"),
                "cpus": spec.get("cpus"),
                "predicted_cpus": spec.get("predicted_cpus"),
                "prediction": predictions.get(wid),
                "status": row.get("status"),
                "status_reason": row.get("reason"),
                "cpuset": row.get("cpuset"),
                "reason": row.get("assignment_reason"),
                "pool": pool_of(row, topology),
                "be_box": wid in be_box,
                "runs_on": str(effective[wid]) if wid in effective else row.get("cpuset"),
                "usage_cores": row.get("usage_cores"),
                "utilisation": row.get("utilisation"),
                "enforcement": (row.get("enforcement") or {}).get("state"),
                "enforcement_errors": (row.get("enforcement") or {}).get("errors") or [],
            }
        )
    return {
        "uptime_s": status.get("uptime_s"),
        "dry_run": status.get("dry_run"),
        "enforcer": status.get("enforcer"),
        "decisions_total": status.get("decisions_total"),
        "topology": topology_json(topology),
        "pools": status.get("pools") or {},
        "reserved": status.get("reserved_cpus") or "",
        "workloads": workloads,
        "cpu_usage": cpu_usage(topology, rows, effective),
        "control": control,
    }


def ui_router(
    service: AgentService,
    *,
    token: str | None = None,
    period_s: float = DEFAULT_PERIOD_S,
    keep_s: float = DEFAULT_KEEP_S,
) -> APIRouter:
    """The web view's routes over ``service`` (see the module docstring). With ``token``
    the ``/ui/api`` routes need ``Authorization: Bearer <token>``. The history is sampled
    every ``period_s`` for ``keep_s`` by a task started now when a loop runs (the agent),
    else on the first API request."""
    assets = load_assets()
    history = HostHistory(
        service, cpus=len(service.topology.cpus), period_s=period_s, keep_s=keep_s
    )
    router = APIRouter(include_in_schema=False)

    async def authorised(request: Request) -> None:
        history.ensure_running()
        if token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise HTTPException(401, "a bearer token is required: Authorization: Bearer <token>")

    guard = [Depends(authorised)]

    def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            raise HTTPException(404, f"no file {name!r} in the web view")
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if name == "index.html":
            headers["Content-Security-Policy"] = CSP
        return Response(found.body, media_type=found.media_type, headers=headers)

    @router.get("/ui")
    @router.get("/ui/")
    async def page() -> Response:
        """The page (asks for the token itself when the API wants one)."""
        return asset("index.html")

    @router.get("/ui/static/{name}")
    async def static(name: str) -> Response:
        """One of the page's files."""
        if name == "index.html":
            raise HTTPException(404, "the page is at /ui")
        return asset(name)

    @router.get("/ui/api/host", dependencies=guard)
    async def host() -> dict[str, Any]:
        """Topology, placement, usage and the controller's state."""
        return host_json(service)

    @router.get("/ui/api/history", dependencies=guard)
    async def history_json(
        since: Annotated[float | None, Query(description="Points after this time, s.")] = None,
        after: Annotated[int, Query(ge=0, description="Log entries after this seq.")] = 0,
    ) -> dict[str, Any]:
        """The time view: points and log entries since the page's last poll."""
        doc = history.to_json(since_s=since, after_seq=after)
        doc["control"] = service.control is not None
        return doc

    with contextlib.suppress(RuntimeError):  # no running loop yet: started on first use
        history.ensure_running()
    return router
