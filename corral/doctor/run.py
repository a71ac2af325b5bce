"""Run every probe under one root and evaluate what they saw."""

from __future__ import annotations

import os
from pathlib import Path

import corral
from corral.doctor.evaluate import TOOLS, evaluate
from corral.doctor.findings import Report
from corral.doctor.observations import HostObservation
from corral.doctor.probes import (
    probe_cgroups,
    probe_clock,
    probe_cpu,
    probe_k8s,
    probe_kubelet,
    probe_perf,
    probe_psi,
    probe_rdt,
    probe_tools,
)
from corral.errors import InputError


def default_shared_k8s() -> Path:
    """Where the kube tests look for the Kubernetes binaries: ``$CORRAL_SHARED_K8S``, else
    ``shared/k8s`` next to the clone holding this package."""
    configured = os.environ.get("CORRAL_SHARED_K8S")
    if configured:
        return Path(configured)
    return Path(corral.__file__).resolve().parents[2] / "shared" / "k8s"


def observe(
    root: Path, *, cgroup_parent: str = "corral", shared_k8s: Path | None = None
) -> HostObservation:
    """Run every probe on the host seen under ``root`` (``/`` for this one);
    ``shared_k8s`` defaults to `default_shared_k8s`.

    Raises `InputError` when ``root`` is not a directory.
    """
    if not root.is_dir():
        raise InputError("--root", f"{root} is not a directory", "give / or a directory tree")
    return HostObservation(
        cgroups=probe_cgroups(root, cgroup_parent=cgroup_parent),
        psi=probe_psi(root),
        rdt=probe_rdt(root),
        perf=probe_perf(root),
        cpu=probe_cpu(root),
        kubelet=probe_kubelet(root),
        tools=probe_tools(root, (t.names for t in TOOLS)),
        k8s=probe_k8s(default_shared_k8s() if shared_k8s is None else shared_k8s),
        clock=probe_clock(root),
    )


def diagnose(
    root: Path = Path("/"), *, cgroup_parent: str = "corral", shared_k8s: Path | None = None
) -> Report:
    """What corral can and cannot do on the host under ``root``: every finding and the
    verdict (`Report.can_enforce`). The only change it makes is a probe cgroup per
    hierarchy, removed before it returns."""
    return evaluate(observe(root, cgroup_parent=cgroup_parent, shared_k8s=shared_k8s))
