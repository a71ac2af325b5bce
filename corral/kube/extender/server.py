"""HTTP for the extender (a bare ASGI app on uvicorn: three POST verbs and two GETs) and the
watches that feed its view.

* ``POST <prefix>/filter``, ``<prefix>/prioritize``, ``<prefix>/bind``: the protocol's bodies;
  any path ending in the verb works, so ``urlPrefix`` may carry a path.
* ``GET /healthz``: 200 once the three watches have listed, else 503.
* ``GET /stats``: calls, p50/p99 milliseconds per verb (server-side, body read to answer
  written; ``bind`` includes its two apiserver writes, ``bind_decision`` is the same binds
  without them), binds, reservations.

A bad body gets a 400 (413 when too big, 404/405 for other paths and methods) whose JSON
``Error`` names the field; nothing a caller sends yields a 500 or a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

from corral.errors import InputError
from corral.kube import nrt
from corral.kube.client import KubeClient, load_kubeconfig, nodes_path, pods_path
from corral.kube.extender.config import ExtenderSettings
from corral.kube.extender.reserve import make_cache
from corral.kube.extender.service import Extender
from corral.kube.extender.view import ClusterView
from corral.kube.extender.wire import parse_args, parse_binding
from corral.kube.watch import Informer

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

VERBS: Final = ("filter", "prioritize", "bind")
LATENCY_WINDOW: Final = 100_000
"""Calls per verb kept for the percentiles."""


class BodyTooLargeError(InputError):
    """A body over the configured limit."""


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` by nearest rank (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class ExtenderApp:
    """The ASGI application."""

    def __init__(
        self,
        extender: Extender,
        *,
        max_body_bytes: int,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.extender = extender
        self.max_body_bytes = max_body_bytes
        self.ready = ready
        self.latency_s: dict[str, deque[float]] = {v: deque(maxlen=LATENCY_WINDOW) for v in VERBS}
        self.errors_4xx = 0

    def stats(self) -> dict[str, Any]:
        """Calls and latency per verb, binds and reservations."""
        verbs = {}
        series = {**self.latency_s, "bind_decision": self.extender.bind_decision_s}
        for verb, values in series.items():
            data = list(values)
            verbs[verb] = {
                "calls": len(data),
                "p50_ms": round(percentile(data, 0.5) * 1000, 3),
                "p99_ms": round(percentile(data, 0.99) * 1000, 3),
                "max_ms": round(max(data, default=0.0) * 1000, 3),
            }
        ext = self.extender
        return {
            "verbs": verbs,
            "binds": ext.binds,
            "bind_failures": ext.bind_failures,
            "bind_retries_reused": ext.bind_retries_reused,
            "reservations": sum(len(ext.view.cache.on_node(n)) for n in ext.view.node_names),
            "bad_requests": self.errors_4xx,
            "nodes": len(ext.view.node_names),
            "topologies": len(ext.view.topos),
            "pods": len(ext.view.pods),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        path = str(scope.get("path", "/")).rstrip("/")
        verb = path.rsplit("/", 1)[-1]
        try:
            if method == "GET" and verb == "healthz":
                ok = self.ready()
                await _reply(send, 200 if ok else 503, {"ready": ok})
            elif method == "GET" and verb == "stats":
                await _reply(send, 200, self.stats())
            elif verb in VERBS:
                if method != "POST":
                    await _reply(send, 405, {"Error": f"{verb}: use POST"})
                    return
                await self._verb(verb, receive, send)
            else:
                await _reply(send, 404, {"Error": f"no such path {path or '/'}"})
        except Exception:  # the last guard: a caller never sees a traceback
            log.exception("extender.request_failed", extra={"path": path})
            await _reply(send, 500, {"Error": f"{verb}: internal error (logged)"})

    async def _verb(self, verb: str, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        try:
            body = await _read_body(receive, self.max_body_bytes)
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as err:
                raise InputError("body", f"not JSON: {str(err)[:120]}") from None
            if verb == "filter":
                answer: Any = self.extender.filter(parse_args(data))
            elif verb == "prioritize":
                answer = self.extender.prioritize(parse_args(data))
            else:
                answer = await self.extender.bind(parse_binding(data))
        except BodyTooLargeError as err:
            self.errors_4xx += 1
            await _reply(send, 413, {"Error": str(err)})
            return
        except InputError as err:
            self.errors_4xx += 1
            await _reply(send, 400, {"Error": f"{verb}: {err}"})
            return
        await _reply(send, 200, answer)
        self.latency_s[verb].append(time.perf_counter() - start)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            raise InputError("body", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError("body", f"larger than {limit} bytes", "raise max_body_bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _reply(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _informers(client: KubeClient, view: ClusterView, settings: ExtenderSettings) -> list[Informer]:
    timeout = settings.watch_timeout_s
    return [
        Informer(client, nodes_path(), view.on_node, watch_timeout_s=timeout),
        Informer(client, nrt.PATH, view.on_nrt, watch_timeout_s=timeout),
        Informer(
            client,
            pods_path(),
            view.on_pod,
            params={"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"},
            watch_timeout_s=timeout,
        ),
    ]


async def serve(
    *,
    kubeconfig: Path | None,
    host: str,
    port: int,
    settings: ExtenderSettings,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Watch the cluster and serve the extender until SIGINT/SIGTERM (or cancellation).
    ``on_ready`` gets the bound port once the watches have listed."""
    import uvicorn  # noqa: PLC0415 - only the server needs it

    from corral.kube.client import in_cluster_config  # noqa: PLC0415

    config = load_kubeconfig(kubeconfig) if kubeconfig else in_cluster_config()
    # Watches stream on their own connections; binds get a pool of their own.
    async with KubeClient(config, max_connections=4) as watcher, KubeClient(config) as writer:
        view = ClusterView(make_cache(settings.cache))
        informers = _informers(watcher, view, settings)
        tasks = [asyncio.create_task(i.run(), name=f"watch {i.path}") for i in informers]
        extender = Extender(view, writer, settings)
        app = ExtenderApp(
            extender,
            max_body_bytes=settings.max_body_bytes,
            ready=lambda: all(i.synced.is_set() for i in informers),
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                lifespan="off",
                access_log=False,
                log_level="warning",
                loop="asyncio",
                http="h11",
                timeout_keep_alive=30,
            )
        )

        async def announce() -> None:
            await asyncio.gather(*(i.synced.wait() for i in informers))
            while not server.started:
                await asyncio.sleep(0.01)
            bound = port
            for s in server.servers:
                for sock in s.sockets:
                    bound = sock.getsockname()[1]
            log.info("extender.ready", extra={"host": host, "port": bound})
            if on_ready is not None:
                on_ready(bound)

        tasks.append(asyncio.create_task(announce(), name="announce"))
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
