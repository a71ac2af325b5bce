"""Find a workload's cgroup: an explicit path, or a container id under the usual layouts.

Layouts searched (relative to a hierarchy root; v1 hierarchies share the same paths):

* kubelet, cgroupfs driver: ``kubepods[/burstable|/besteffort]/pod<uid>/<id>``
* kubelet, systemd driver: ``kubepods.slice[/kubepods-<qos>.slice]/kubepods-...-pod<uid>.slice/
  <runtime>-<id>.scope`` with runtime ``cri-containerd``, ``crio``, ``docker`` or ``libpod``
* Docker: ``docker/<id>`` and ``system.slice/docker-<id>.scope``
* containerd: ``<namespace>/<id>`` for the ``k8s.io``, ``default`` and ``moby`` namespaces, and
  ``system.slice/containerd-<id>.scope`` / ``cri-containerd-<id>.scope``
* CRI-O with the cgroupfs driver: ``kubepods/<qos>/pod<uid>/crio-<id>``

Pods (`locate_pod`): kubelet's pod cgroup from the pod uid and QoS class, with either
driver: ``kubepods[/<qos>]/pod<uid>`` (cgroupfs) or ``kubepods.slice[/kubepods-<qos>.slice]/
kubepods[-<qos>]-pod<uid with _ for ->.slice`` (systemd); Guaranteed pods sit directly under
kubepods. The paths are the same in cgroup v1 hierarchies and in the v2 unified tree.

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
_SCOPE = re.compile(r"^(?:docker|cri-containerd|crio|containerd|libpod)-([0-9a-f]+)(?:\.scope)?$")
_POD_UID = re.compile(r"^[0-9a-fA-F-]{1,64}$")
QOS_DIRS = {"Guaranteed": "", "Burstable": "burstable", "BestEffort": "besteffort"}
"""kubelet's QoS sub-tree of each Kubernetes QoS class ("": directly under kubepods)."""
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


def pod_cgroup_candidates(pod_uid: str, qos_class: str | None = None) -> list[str]:
    """The paths kubelet gives the pod cgroup of ``pod_uid`` (cgroupfs then systemd
    driver), for its QoS class or, when None, for every class."""
    if not _POD_UID.match(pod_uid):
        raise InputError("pod_uid", f"{pod_uid!r} is not a pod uid", "give metadata.uid")
    classes = [qos_class] if qos_class is not None else list(QOS_DIRS)
    out: list[str] = []
    for cls in classes:
        if cls not in QOS_DIRS:
            raise InputError(
                "qos_class", f"{cls!r} is not a QoS class", "Guaranteed, Burstable or BestEffort"
            )
        qos = QOS_DIRS[cls]
        out.append("kubepods" + (f"/{qos}" if qos else "") + f"/pod{pod_uid}")
        systemd_uid = pod_uid.replace("-", "_")
        if qos:
            out.append(f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{systemd_uid}.slice")
        else:
            out.append(f"kubepods.slice/kubepods-pod{systemd_uid}.slice")
    return out


def locate_pod(
    hierarchy: Path, pod_uid: str, qos_class: str | None = None, *, field: str = "pod"
) -> str:
    """The pod cgroup (relative path) of ``pod_uid`` in ``hierarchy``: the first of
    `pod_cgroup_candidates` that exists. `InputError` when none does."""
    candidates = pod_cgroup_candidates(pod_uid, qos_class)
    for rel in candidates:
        if (hierarchy / rel).is_dir():
            return rel
    raise InputError(
        field,
        f"no pod cgroup for uid {pod_uid} under {hierarchy} (looked for {', '.join(candidates)})",
        "check kubelet's --cgroup-root and --cgroup-driver, or that the pod has started",
    )
