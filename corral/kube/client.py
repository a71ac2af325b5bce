"""A small asyncio Kubernetes API client on httpx (already a corral dependency).

Why not kubernetes_asyncio or lightkube: corral needs a handful of verbs (get, list, watch,
create, replace, merge/strategic/apply patch, delete, the eviction subresource) on a few
resource kinds including a CRD, with full control of watch semantics (resourceVersion
resume, 410 relist, bookmarks: `corral.kube.watch`). httpx gives a typed async HTTP/1.1
client with connection pooling and streaming; the generated clients add tens of thousands
of lines (and aiohttp for kubernetes_asyncio) for models corral does not use, and CRDs are
plain dictionaries in both anyway.

Objects are plain JSON dictionaries; errors are `ApiError` (status code, Kubernetes
``reason`` and message). Nothing here blocks the event loop after construction.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx
import yaml

from corral.errors import CorralError, InputError

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_S: Final = 60.0
"""How often a token file is read again (projected service-account tokens rotate)."""


class ApiError(CorralError):
    """The apiserver refused a request: ``status`` (HTTP code), ``reason`` (``NotFound``,
    ``Conflict``, ``Expired``, ``TooManyRequests``...) and its message."""

    def __init__(self, status: int, reason: str, message: str, *, what: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{what + ': ' if what else ''}{status} {reason}: {message}")


class ConnectionFailedError(CorralError):
    """The apiserver could not be reached (refused, reset, timed out)."""


class PatchType(StrEnum):
    """Content types of PATCH."""

    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    JSON = "application/json-patch+json"
    APPLY = "application/apply-patch+yaml"


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """Where the apiserver is and how to authenticate (one of token, token file, cert)."""

    server: str
    ca_file: Path | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    token: str | None = None
    token_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    namespace: str = "default"
    impersonate: str | None = None  # kubeconfig ``as``: act as this user (needs the right)


def _b64(value: str, field: str) -> bytes:
    import base64  # noqa: PLC0415 - only kubeconfigs with inline data need it

    try:
        return base64.b64decode(value, validate=True)
    except ValueError as err:
        raise InputError(field, "is not base64", "copy the value again from the cluster") from err


def _named(items: Any, name: str, key: str, path: Path) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(key), dict):
            found: dict[str, Any] = item[key]
            return found
    raise InputError(f"{path}: {key}s", f"no {key} named {name!r}", "fix the kubeconfig")


def load_kubeconfig(path: Path, *, context: str | None = None) -> KubeConfig:
    """Read a kubeconfig file (its current context, or ``context``): server, CA, and a
    token, token file or client certificate. `InputError` names what is missing."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(
            "kubeconfig", f"cannot read {path}: {err}", "give a kubeconfig file"
        ) from err
    if not isinstance(doc, dict):
        raise InputError("kubeconfig", f"{path} is not a kubeconfig", "give a kubeconfig file")
    name = context or doc.get("current-context")
    if not name:
        raise InputError("kubeconfig", f"{path} has no current-context", "pass a context")
    ctx = _named(doc.get("contexts"), name, "context", path)
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster", path)
    user = _named(doc.get("users"), ctx.get("user", ""), "user", path) if ctx.get("user") else {}
    base = path.parent

    def rel(value: str | None) -> Path | None:
        return None if not value else (base / value if not os.path.isabs(value) else Path(value))

    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise InputError("kubeconfig", f"cluster of context {name!r} has no server URL")
    return KubeConfig(
        server=server.rstrip("/"),
        ca_file=rel(cluster.get("certificate-authority")),
        ca_data=_b64(cluster["certificate-authority-data"], "certificate-authority-data")
        if cluster.get("certificate-authority-data")
        else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        token=user.get("token"),
        token_file=rel(user.get("tokenFile")),
        cert_file=rel(user.get("client-certificate")),
        key_file=rel(user.get("client-key")),
        cert_data=_b64(user["client-certificate-data"], "client-certificate-data")
        if user.get("client-certificate-data")
        else None,
        key_data=_b64(user["client-key-data"], "client-key-data")
        if user.get("client-key-data")
        else None,
        namespace=str(ctx.get("namespace") or "default"),
        impersonate=user.get("as"),
    )


def in_cluster_config(
    env: Mapping[str, str] | None = None, root: Path = SERVICE_ACCOUNT_DIR
) -> KubeConfig:
    """The config of a pod: ``KUBERNETES_SERVICE_HOST``/``_PORT`` and the mounted service
    account token and CA. `InputError` when not running in a pod."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (root / "token").exists():
        raise InputError(
            "kubeconfig",
            "not in a pod (no KUBERNETES_SERVICE_HOST or service account token)",
            "give --kubeconfig FILE",
        )
    if ":" in host:
        host = f"[{host}]"
    namespace = (root / "namespace").read_text().strip() if (root / "namespace").exists() else ""
    return KubeConfig(
        server=f"https://{host}:{port}",
        ca_file=root / "ca.crt",
        token_file=root / "token",
        namespace=namespace or "default",
    )


def _ssl_context(config: KubeConfig) -> ssl.SSLContext | bool:
    if not config.server.startswith("https://"):
        return False
    if config.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif config.ca_data is not None:
        ctx = ssl.create_default_context(cadata=config.ca_data.decode())
    elif config.ca_file is not None:
        ctx = ssl.create_default_context(cafile=str(config.ca_file))
    else:
        ctx = ssl.create_default_context()
    if config.cert_file is not None:
        ctx.load_cert_chain(str(config.cert_file), str(config.key_file or config.cert_file))
    elif config.cert_data is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            cert.write_bytes(config.cert_data)
            key.write_bytes(config.key_data or config.cert_data)
            ctx.load_cert_chain(str(cert), str(key))
    return ctx


class _TokenAuth(httpx.Auth):
    """Bearer token, from the config or re-read from its file every `TOKEN_REREAD_S`."""

    def __init__(self, token: str | None, token_file: Path | None) -> None:
        self._token = token
        self._file = token_file
        self._read_at = 0.0

    def _current(self) -> str | None:
        if self._file is not None and time.monotonic() - self._read_at > TOKEN_REREAD_S:
            # On a read error keep the last token; the apiserver answers 401 if it expired.
            with contextlib.suppress(OSError):
                self._token = self._file.read_text().strip()
            self._read_at = time.monotonic()
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _error(response: httpx.Response, what: str) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return ApiError(
        response.status_code,
        str(body.get("reason") or response.reason_phrase),
        str(body.get("message") or response.text[:200]),
        what=what,
    )


class KubeClient:
    """Verbs on API paths (``/api/v1/namespaces/ns/pods/x``); see the path helpers below."""

    def __init__(
        self, config: KubeConfig, *, timeout_s: float = 30.0, max_connections: int = 16
    ) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.server,
            verify=_ssl_context(config),
            auth=_TokenAuth(config.token, config.token_file),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=8),
            headers={
                "Accept": "application/json",
                "User-Agent": "corral",
                **({"Impersonate-User": config.impersonate} if config.impersonate else {}),
            },
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer. `ApiError` for a status >= 400,
        `ConnectionFailedError` when the server cannot be reached."""
        content = None
        if body is not None:
            content = json.dumps(body).encode()
        try:
            response = await self._http.request(
                method,
                path,
                params=dict(params or {}),
                content=content,
                headers={"Content-Type": content_type} if content is not None else None,
            )
        except httpx.TransportError as err:
            raise ConnectionFailedError(f"{method} {path}: {type(err).__name__}: {err}") from err
        if response.status_code >= 400:
            raise _error(response, f"{method} {path}")
        if not response.content:
            return {}
        data = response.json()
        return data if isinstance(data, dict) else {"items": data}

    async def get(self, path: str, **params: str | int) -> dict[str, Any]:
        """GET one object or a list (``params``: labelSelector, fieldSelector, limit...)."""
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the collection at ``path``."""
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT ``body``; with ``metadata.resourceVersion`` set, a concurrent write gives
        `ApiError` 409 Conflict instead of being lost."""
        return await self.request("PUT", path, body=body)

    async def patch(
        self,
        path: str,
        body: Any,
        *,
        patch_type: PatchType = PatchType.MERGE,
        field_manager: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """PATCH ``path`` (merge patch by default; `PatchType.APPLY` is server-side apply
        and needs ``field_manager``)."""
        params: dict[str, str | int] = {}
        if field_manager:
            params["fieldManager"] = field_manager
        if force:
            params["force"] = "true"
        return await self.request(
            "PATCH", path, params=params, body=body, content_type=patch_type.value
        )

    async def delete(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """DELETE ``path`` (``body``: DeleteOptions)."""
        return await self.request("DELETE", path, body=body)

    async def watch(
        self, path: str, *, timeout_s: int = 300, **params: str | int
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream the watch events (``{"type": ..., "object": ...}``) of ``path`` from
        ``params['resourceVersion']``; ends when the server closes the watch (about
        ``timeout_s``). `ApiError` when the server refuses it (410 Gone: relist)."""
        query: dict[str, str | int] = {"watch": "1", "timeoutSeconds": timeout_s, **params}
        timeout = httpx.Timeout(30.0, read=timeout_s + 30.0)
        try:
            async with self._http.stream("GET", path, params=query, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response, f"watch {path}")
                async for line in response.aiter_lines():
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event
        except httpx.TransportError as err:
            raise ConnectionFailedError(f"watch {path}: {type(err).__name__}: {err}") from err


# --- paths ----------------------------------------------------------------------------
def pods_path(namespace: str | None = None) -> str:
    """The pods collection (all namespaces when ``namespace`` is None)."""
    return "/api/v1/pods" if namespace is None else f"/api/v1/namespaces/{quote(namespace)}/pods"


def pod_path(namespace: str, name: str) -> str:
    """One pod."""
    return f"{pods_path(namespace)}/{quote(name)}"


def eviction_path(namespace: str, name: str) -> str:
    """A pod's eviction subresource (POST a policy/v1beta1 Eviction)."""
    return f"{pod_path(namespace, name)}/eviction"


def nodes_path() -> str:
    """The nodes collection."""
    return "/api/v1/nodes"


def node_path(name: str) -> str:
    """One node."""
    return f"/api/v1/nodes/{quote(name)}"


def node_status_path(name: str) -> str:
    """A node's status subresource."""
    return f"{node_path(name)}/status"


def events_path(namespace: str) -> str:
    """The core/v1 events of a namespace."""
    return f"/api/v1/namespaces/{quote(namespace)}/events"
