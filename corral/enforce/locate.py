"""Find a workload's cgroup: an explicit path, or a container id under the usual layouts.

Layouts searched (relative to a hierarchy root; v1 hierarchies share the same paths):

* kubelet, cgroupfs driver: ``kubepods[/burstable|/besteffort]/pod<uid>/<id>``
* kubelet, systemd driver: ``kubepods.slice[/kubepods-<qos>.slice]/kubepods-...-pod<uid>.slice/
  <runtime>-<id>.scope`` with runtime ``cri-containerd``, ``crio``, ``docker`` or ``libpod``
* Docker: ``docker/<id>`` and ``system.slice/docker-<id>.scope``
* containerd: ``<namespace>/<id>`` for the ``k8s.io``, ``default`` and ``moby`` namespaces, and
  ``system.slice/containerd-<id>.scope`` / ``cri-containerd-<id>.scope``

Only these directories are listed (no walk of the whole tree), so lookups stay cheap on
hosts with thousands of cgroups. A short id (12 or more hex digits, as ``docker ps``
prints) matches when exactly one container starts with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from corral.enforce.cgroupfs import child_dirs
from corral.errors import InputError

_QOS_DIRS = ("", "burstable", "besteffort")
_SCOPE = re.compile(r"^(?:docker|cri-containerd|crio|containerd|libpod)-([0-9a-f]+)\.scope$")
_ID = re.compile(r"^[0-9a-f]{12,64}$")
_FLAT_PARENTS = ("docker", "system.slice", "k8s.io", "default", "moby")
MIN_ID_PREFIX = 12


def explicit_path(path: str, *, field: str = "cgroup") -> str:
    """Normalise an explicit cgroup path (``/kubepods/pod1/abc`` -> ``kubepods/pod1/abc``).

    Raises `InputError` for ``..`` or empty components.
    """
    stripped = path.strip().strip("/")
    parts = stripped.split("/") if stripped else []
    if not parts or any(p in {"", ".", ".."} for p in parts):
        raise InputError(
            field,
            f"{path!r} is not a cgroup path",
            "write a path below the hierarchy root like kubepods/burstable/pod1/abc",
        )
    return "/".join(parts)


def container_candidates(hierarchy: Path) -> dict[str, list[str]]:
    """Every container id found under the known layouts -> the cgroups holding it."""
    found: dict[str, list[str]] = {}

    def add(container: str, rel: str) -> None:
        found.setdefault(container, []).append(rel)

    for qos in _QOS_DIRS:
        base = "kubepods" + (f"/{qos}" if qos else "")
        for pod in child_dirs(hierarchy / base):
            if pod.startswith("pod"):
                for name in child_dirs(hierarchy / base / pod):
                    _match(name, f"{base}/{pod}/{name}", add)
        slice_base = "kubepods.slice" + (f"/kubepods-{qos}.slice" if qos else "")
        for pod in child_dirs(hierarchy / slice_base):
            if "-pod" in pod and pod.endswith(".slice"):
                for name in child_dirs(hierarchy / slice_base / pod):
                    _match(name, f"{slice_base}/{pod}/{name}", add)
    for parent in _FLAT_PARENTS:
        for name in child_dirs(hierarchy / parent):
            _match(name, f"{parent}/{name}", add)
    return found


def locate_container(hierarchy: Path, container_id: str, *, field: str = "container_id") -> str:
    """The cgroup (relative path) of ``container_id`` in ``hierarchy``.

    Raises `InputError` when the id is malformed, not found, or a prefix of several ids.
    """
    wanted = container_id.strip().lower()
    for prefix in ("docker://", "containerd://", "cri-o://"):
        wanted = wanted.removeprefix(prefix)
    if not _ID.match(wanted):
        raise InputError(
            field,
            f"{container_id!r} is not a container id",
            f"give at least {MIN_ID_PREFIX} hex digits, e.g. from 'docker ps' or 'crictl ps'",
        )
    candidates = container_candidates(hierarchy)
    matches = sorted(
        {rel for cid, rels in candidates.items() if cid.startswith(wanted) for rel in rels}
    )
    if not matches:
        raise InputError(
            field,
            f"no cgroup for container {container_id!r} under {hierarchy} "
            "(searched kubepods, kubepods.slice, docker, system.slice and containerd namespaces)",
            "check the id, or give the cgroup path with 'cgroup:'",
        )
    if len(matches) > 1:
        raise InputError(
            field,
            f"{container_id!r} matches {len(matches)} cgroups: {', '.join(matches)}",
            "give more digits of the id",
        )
    return matches[0]


def _match(name: str, rel: str, add: Callable[[str, str], None]) -> None:
    scope = _SCOPE.match(name)
    container = scope.group(1) if scope else name
    if _ID.match(container):
        add(container, rel)
