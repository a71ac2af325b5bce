"""The agent's HTTP API (FastAPI, with an OpenAPI document at /openapi.json).

Errors share one body: ``{"detail": message, "field": dotted.path | null, "fix": str | null}``.
422 names the bad field, 404 an unknown id, 409 a request that cannot be placed; a refused
request changes nothing.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from corral.agent.service import AgentService, ShuttingDownError
from corral.errors import CorralError, InputError, PlacementError
from corral.placement.workload import workload_from_mapping
from corral.topology.file import topology_to_document


class WorkloadSpec(BaseModel):
    """The PUT body, as documented in OpenAPI (validated by corral's Workload model)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="Optional; must equal the path id.")
    # Literals, not the enums: the schema is embedded in OpenAPI without a $defs section.
    qos: Literal["LC", "BE", "system"] = Field(default="BE", description="QoS class.")
    cpus: float = Field(gt=0, description="CPU request in cores; exclusive needs a whole number.")
    policy: Literal["exclusive", "numa", "shared", "immovable"] = Field(
        default="shared", description="Cpuset policy."
    )
    memory_request: int | str | None = Field(default=None, description="Bytes or 512Mi-style.")
    memory_limit: int | str | None = Field(default=None, description="Bytes or 512Mi-style.")
    predicted_cpus: float | None = Field(default=None, ge=0, description="Predicted P95 cores.")
    cpuset: str | list[int] | int | None = Field(
        default=None, description="Fixed CPUs of an immovable workload, e.g. '0-1'."
    )
    cgroup: str | None = Field(default=None, description="Explicit cgroup path.")
    container_id: str | None = Field(default=None, description="Container id.")


class ErrorBody(BaseModel):
    """Every error response."""

    detail: str
    field: str | None = None
    fix: str | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
    404: {"model": ErrorBody, "description": "Unknown workload id."},
    409: {"model": ErrorBody, "description": "The request cannot be placed; nothing changed."},
    422: {"model": ErrorBody, "description": "Invalid input; `field` names it."},
    503: {"model": ErrorBody, "description": "The agent is shutting down."},
}


def _error(
    status: int, detail: str, field: str | None = None, fix: str | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"detail": detail, "field": field, "fix": fix or None}
    )


def create_app(
    service: AgentService, *, registry: CollectorRegistry, token: str | None = None
) -> FastAPI:
    """The API over ``service``. With ``token`` every route but /healthz needs
    ``Authorization: Bearer <token>``."""
    app = FastAPI(
        title="corral agent",
        version="1",
        description="Places and isolates the workloads of one host.",
    )

    async def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise HTTPException(401, "a bearer token is required: Authorization: Bearer <token>")

    guard = [Depends(authorised)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, str(first.get("msg", "invalid")), field)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, err: HTTPException) -> JSONResponse:
        response = _error(err.status_code, str(err.detail))
        if err.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(InputError)
    async def _input(_: Request, err: InputError) -> JSONResponse:
        return _error(422, err.problem, err.field, err.fix)

    @app.exception_handler(PlacementError)
    async def _placement(_: Request, err: PlacementError) -> JSONResponse:
        return _error(409, str(err), "cpus")

    @app.exception_handler(ShuttingDownError)
    async def _stopping(_: Request, err: ShuttingDownError) -> JSONResponse:
        return _error(503, str(err))

    @app.exception_handler(CorralError)
    async def _corral(_: Request, err: CorralError) -> JSONResponse:
        return _error(500, str(err))

    @app.get("/healthz", summary="Liveness: the agent answers.")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/topology", dependencies=guard, responses=_ERRORS)
    async def topology() -> dict[str, Any]:
        """The host topology the agent places on."""
        topo = service.topology
        return {
            "name": topo.name,
            "describe": topo.describe(),
            **topology_to_document(topo),
        }

    @app.get("/workloads", dependencies=guard, responses=_ERRORS)
    async def list_workloads() -> dict[str, Any]:
        """Every workload with its status, CPUs and latest utilisation."""
        return {"workloads": [v.to_json() for v in service.views()]}

    @app.get("/workloads/{workload_id}", dependencies=guard, responses=_ERRORS)
    async def get_workload(workload_id: str) -> dict[str, Any]:
        """One workload."""
        view = service.view(workload_id)
        if view is None:
            raise HTTPException(404, f"no workload {workload_id!r}")
        return view.to_json()

    @app.put(
        "/workloads/{workload_id}",
        dependencies=guard,
        status_code=200,
        responses={
            **_ERRORS,
            201: {"description": "Created and placed (wait=true)."},
            202: {"description": "Stored and queued for the next decision (wait=false)."},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WorkloadSpec.model_json_schema()}},
            }
        },
    )
    async def put_workload(
        workload_id: str,
        request: Request,
        response: Response,
        wait: Annotated[
            bool, Query(description="Wait until the workload is placed (or refused).")
        ] = False,
    ) -> dict[str, Any]:
        """Create or update a workload. 202 once stored (placed by the next decision), or
        with ``wait=true`` 201/200 once placed, 409 when it cannot be."""
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError("body", f"not valid JSON: {err}", "send a JSON object") from None
        if not isinstance(body, dict):
            raise InputError("body", "must be a JSON object", 'e.g. {"cpus": 2, "qos": "LC"}')
        if "id" in body and body["id"] != workload_id:
            raise InputError("id", f"{body['id']!r} differs from the path id {workload_id!r}")
        workload = workload_from_mapping({**body, "id": workload_id}, where="body")
        result = await service.put(workload, wait=wait)
        if result.queued:
            response.status_code = 202
        else:
            response.status_code = 201 if result.created else 200
        return result.view.to_json()

    @app.delete("/workloads/{workload_id}", dependencies=guard, status_code=204, responses=_ERRORS)
    async def delete_workload(workload_id: str) -> Response:
        """Remove a workload; returns once the removal is committed."""
        if not await service.delete(workload_id):
            raise HTTPException(404, f"no workload {workload_id!r}")
        return Response(status_code=204)

    @app.get("/assignments", dependencies=guard, responses=_ERRORS)
    async def assignments() -> dict[str, Any]:
        """The current placement: CPUs per workload, pools, reasons, refusals."""
        return service.placement.to_json()

    @app.post("/rebalance", dependencies=guard, responses=_ERRORS)
    async def rebalance() -> dict[str, Any]:
        """Rebalance now; returns the decision (``adopted`` says whether anything moved)."""
        record = await service.rebalance()
        return {"decision": None if record is None else record.to_json()}

    @app.post("/reconcile", dependencies=guard, responses=_ERRORS)
    async def reconcile() -> dict[str, Any]:
        """Check drift and repair it now."""
        return await service.reconcile()

    @app.get("/status", dependencies=guard, responses=_ERRORS)
    async def status() -> dict[str, Any]:
        """Pending events, last decision, solver stats, drift, enforcement errors."""
        return service.status()

    @app.get("/metrics", dependencies=guard, responses=_ERRORS)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
