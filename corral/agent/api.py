"""The agent's HTTP API (FastAPI, with an OpenAPI document at /openapi.json).

Errors share one body: ``{"detail": message, "field": dotted.path | null, "fix": str | null}``.
422 names the bad field, 413 a body over `MAX_BODY_BYTES`, 404 an unknown id, 409 a request
that cannot be placed; a refused request changes nothing. Bodies are read bounded: at most
`MAX_BODY_BYTES`, nesting at most `MAX_JSON_DEPTH` deep (checked before parsing), UTF-8,
integers of at most 20 digits (never converted past that); every field is then bounded by
`corral.placement.workload`. An unexpected exception is a 500 with a generic body (its
traceback goes to the agent log once, never to the client).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.agent.admission import OverloadedError
from corral.agent.docs import add_docs
from corral.agent.service import AgentService, ShuttingDownError
from corral.agent.state import StateCorruptError, StateUnavailableError
from corral.agent.ui import ui_router
from corral.errors import CorralError, InputError, PlacementError
from corral.placement.workload import (
    MAX_CGROUP_PATH,
    MAX_CPU_LIST,
    MAX_CPUS,
    MAX_ID_LENGTH,
    MAX_MEMORY_BYTES,
    MIN_CPUS,
    json_int,
    shown,
    workload_from_mapping,
)
from corral.topology.file import topology_to_document

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body, bytes: a workload spec is a few hundred bytes."""
MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of a JSON body (a workload spec nests 2 deep); checked on the raw bytes
before parsing, so a deep body never reaches the recursive parser."""
_STRUCTURE = re.compile(rb'["\\\[\]{}]')


class WorkloadSpec(BaseModel):
    """The PUT body, as documented in OpenAPI (validated by corral's Workload model)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None, max_length=MAX_ID_LENGTH, description="Optional; must equal the path id."
    )
    # Literals, not the enums: the schema is embedded in OpenAPI without a $defs section.
    qos: Literal["LC", "BE", "system"] = Field(default="BE", description="QoS class.")
    cpus: float = Field(
        ge=MIN_CPUS,
        le=MAX_CPUS,
        description="CPU request in cores (a JSON number); exclusive needs a whole number.",
    )
    policy: Literal["exclusive", "numa", "shared", "immovable"] = Field(
        default="shared", description="Cpuset policy."
    )
    memory_request: int | str | None = Field(
        default=None, description="Bytes or 512Mi-style, at most the agent's memory bound."
    )
    memory_limit: int | str | None = Field(
        default=None, description="Bytes or 512Mi-style, at most the agent's memory bound."
    )
    predicted_cpus: float | None = Field(
        default=None, ge=0, le=MAX_CPUS, description="Predicted P95 cores."
    )
    cpuset: str | list[int] | int | None = Field(
        default=None,
        description=f"Fixed CPUs of an immovable workload, e.g. '0-1' (at most {MAX_CPU_LIST} "
        "characters or ids).",
    )
    cgroup: str | None = Field(
        default=None,
        max_length=MAX_CGROUP_PATH,
        description="Explicit cgroup path below each hierarchy root (no '..', no control "
        "characters).",
    )
    container_id: str | None = Field(
        default=None,
        max_length=len("containerd://") + 64,
        description="Container id: 12-64 hex digits, optionally after docker://, "
        "containerd:// or cri-o://.",
    )


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
    429: {"model": ErrorBody, "description": "Overloaded; retry after Retry-After."},
    503: {"model": ErrorBody, "description": "Shutting down, or the state store is unusable."},
}


_FIX_BY_STATUS: Final = {
    401: "send Authorization: Bearer <token>",
    404: "GET /workloads lists the workloads; /openapi.json the routes",
    405: "see /openapi.json for the methods of each route",
    409: "ask for fewer CPUs, or remove or shrink another workload",
    503: "retry in a moment",
}
_INTERNAL: Final = "internal error; see the agent log"


class BodyTooLargeError(InputError):
    """A request body over `MAX_BODY_BYTES` (answered 413)."""


def _clean(text: str | None, limit: int = 2000) -> str | None:
    """Text fit for a JSON error body: surrogates escaped, bounded."""
    if text is None:
        return None
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else f"{safe[:limit]}..."


def _error(
    status: int, detail: str, field: str | None = None, fix: str | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={
            "detail": _clean(detail),
            "field": _clean(field, 200),
            "fix": _clean(fix or _FIX_BY_STATUS.get(status)) or None,
        },
    )


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """True when the JSON text ``raw`` nests arrays and objects more than ``limit`` deep.

    One pass over the structural bytes, skipping string contents (with their escapes), so it
    is linear in the size of ``raw`` and never recurses; invalid JSON is left to the parser.
    """
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _STRUCTURE.finditer(raw):
        pos = match.start()
        if pos == escaped_at:
            continue
        char = raw[pos]
        if in_string:
            if char == 0x5C:  # backslash: the next byte is escaped
                escaped_at = pos + 1
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in b"[{":
            depth += 1
            if depth > limit:
                return True
        elif char in b"]}":
            depth -= 1
    return False


def parse_json_body(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of a request body (``null`` when empty); `InputError` for text that
    is not UTF-8 JSON, nests deeper than ``max_depth``, or is too deep for the parser.

    Integer literals longer than 20 digits become `TooManyDigits` (never converted), and
    NaN/Infinity are read as floats: the workload model then refuses them by field name.
    """
    if not raw.strip():
        return None
    if nested_deeper_than(raw, max_depth):
        raise InputError("body", f"nests deeper than {max_depth} levels", "send a flat JSON object")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=json_int, parse_constant=float)
    except UnicodeDecodeError:
        raise InputError("body", "is not UTF-8", "send UTF-8 encoded JSON") from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise InputError("body", f"not valid JSON: {err}", "send a JSON object") from None


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, read no further than ``limit`` bytes; `BodyTooLargeError` past
    it (a declared Content-Length over the limit is refused before reading)."""
    declared = request.headers.get("content-length", "")
    too_large = BodyTooLargeError(
        "body", f"is larger than {limit} bytes", "a workload spec is a small JSON object"
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class InternalErrors:
    """ASGI middleware: an exception no handler took becomes a 500 with a generic JSON
    body; its traceback is logged once (``api.internal_error``), never sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer 500 for an exception that escapes it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception(
                "api.internal_error",
                extra={"method": scope.get("method"), "path": scope.get("path")},
            )
            if not started:
                await _error(500, _INTERNAL)(scope, receive, send)


def create_app(
    service: AgentService,
    *,
    registry: CollectorRegistry,
    token: str | None = None,
    max_memory_bytes: int = MAX_MEMORY_BYTES,
) -> FastAPI:
    """The API over ``service``. With ``token`` every route but /healthz needs
    ``Authorization: Bearer <token>``. Memory requests and limits above
    ``max_memory_bytes`` are refused (422)."""
    app = FastAPI(
        title="corral agent",
        version="1",
        description="Places and isolates the workloads of one host.",
        docs_url=None,  # served by add_docs from local files, not a CDN
        redoc_url=None,
    )
    add_docs(app)
    app.add_middleware(InternalErrors)

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
        errors = err.errors()
        first = errors[0] if errors else {}
        field = ".".join(str(p) for p in first.get("loc", ()))
        fix = "use true or false" if field == "query.wait" else "see /openapi.json"
        return _error(422, str(first.get("msg", "invalid")), field, fix)

    @app.exception_handler(StarletteHTTPException)  # also the router's own 404 and 405
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        response = _error(err.status_code, str(err.detail))
        response.headers.update(err.headers or {})  # e.g. Allow on a 405
        if err.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(InputError)
    async def _input(_: Request, err: InputError) -> JSONResponse:
        return _error(422, err.problem, err.field, err.fix)

    @app.exception_handler(BodyTooLargeError)
    async def _too_large(_: Request, err: BodyTooLargeError) -> JSONResponse:
        return _error(413, err.problem, err.field, err.fix)

    @app.exception_handler(PlacementError)
    async def _placement(_: Request, err: PlacementError) -> JSONResponse:
        return _error(409, str(err), "cpus")

    @app.exception_handler(ShuttingDownError)
    async def _stopping(_: Request, err: ShuttingDownError) -> JSONResponse:
        return _error(503, str(err))

    @app.exception_handler(OverloadedError)
    async def _overloaded(_: Request, err: OverloadedError) -> JSONResponse:
        response = _error(429, str(err), fix="retry after the Retry-After delay")
        response.headers["Retry-After"] = err.retry_after
        return response

    @app.exception_handler(StateUnavailableError)
    async def _unavailable(_: Request, err: StateUnavailableError) -> JSONResponse:
        # The write was not committed: the caller may retry; the agent stays up.
        response = _error(503, str(err), "state", err.fix)
        if err.transient:
            response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(StateCorruptError)
    async def _corrupt(_: Request, err: StateCorruptError) -> JSONResponse:
        return _error(503, str(err), "state", "restore the state file; see the agent log")

    @app.exception_handler(CorralError)
    async def _corral(request: Request, err: CorralError) -> JSONResponse:
        # Not input (InputError is mapped above): a genuine internal error, said as it is.
        log.error(
            "api.corral_error",
            extra={"method": request.method, "path": request.url.path},
            exc_info=err,
        )
        return _error(500, str(err), fix="see the agent log")

    @app.get("/healthz", summary="Liveness: the agent answers.")
    async def healthz() -> dict[str, Any]:
        """Answers from memory, never waiting for the store, a decision or a source."""
        return {"ok": True}

    @app.get(
        "/readyz",
        summary="Readiness: the agent can take and store writes.",
        responses={503: {"model": ErrorBody, "description": "Not ready; `detail` says why."}},
    )
    async def readyz(response: Response) -> dict[str, Any]:
        """200 when started with a usable state store and no task failing; 503 with the
        reasons otherwise (a liveness probe should use /healthz)."""
        reasons = service.not_ready()
        if reasons:
            response.status_code = 503
        return {"ready": not reasons, "reasons": reasons}

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
        return {"workloads": service.workloads_json()}

    @app.get("/workloads/{workload_id:path}", dependencies=guard, responses=_ERRORS)
    async def get_workload(workload_id: str) -> dict[str, Any]:
        """One workload."""
        view = service.view(workload_id)
        if view is None:
            raise HTTPException(404, f"no workload {workload_id!r}")
        return view.to_json()

    @app.put(
        "/workloads/{workload_id:path}",
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
        body = parse_json_body(await read_body(request))
        if not isinstance(body, dict):
            raise InputError("body", "must be a JSON object", 'e.g. {"cpus": 2, "qos": "LC"}')
        if "id" in body and body["id"] != workload_id:
            raise InputError(
                "id",
                f"{shown(body['id'])} differs from the path id {shown(workload_id)}",
                "leave id out of the body, or make it equal the path id",
            )
        workload = workload_from_mapping(
            {**body, "id": workload_id}, where="body", max_memory_bytes=max_memory_bytes
        )
        result = await service.put(workload, wait=wait)
        if result.queued:
            response.status_code = 202
        else:
            response.status_code = 201 if result.created else 200
        return result.view.to_json()

    @app.delete(
        "/workloads/{workload_id:path}", dependencies=guard, status_code=204, responses=_ERRORS
    )
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

    app.include_router(ui_router(service, token=token))  # the web view at /ui
    return app
