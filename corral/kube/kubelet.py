"""What corral reads of kubelet on its node: the CPU manager checkpoint and the
KubeletConfiguration file (reserved CPUs, CPU and topology manager policies).

Why it matters: kubelet's static CPU manager writes the cpuset of *every* container it
runs (exclusive CPUs for Guaranteed integer pods, the shared pool for all others) whenever
its desired set for a container changes and after each kubelet restart. An external writer
next to it is silently overwritten. So corral either refuses to start (default) or, when
told to (``static_cpu_manager: avoid``), keeps off the CPUs kubelet holds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from corral.errors import InputError
from corral.kube.quantity import parse_quantity
from corral.topology.cpuset import CpuSet

STATE_FILE = "cpu_manager_state"
CONFIG_FILE = "config.yaml"
STATIC = "static"


@dataclass(frozen=True, slots=True)
class CpuManagerState:
    """kubelet's CPU manager checkpoint: its policy, its shared pool and the exclusive CPUs
    it gave each container (pod uid -> container -> CPUs)."""

    policy: str
    default_cpus: CpuSet
    entries: dict[str, dict[str, CpuSet]]

    @property
    def exclusive_cpus(self) -> CpuSet:
        """Every CPU kubelet holds exclusively for a container."""
        return CpuSet().union(*(c for pod in self.entries.values() for c in pod.values()))


def read_cpu_manager_state(kubelet_root: Path) -> CpuManagerState | None:
    """The checkpoint under ``kubelet_root`` (None when kubelet wrote none). `InputError`
    when it exists but cannot be read."""
    path = kubelet_root / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise InputError(str(path), f"cannot read kubelet's CPU manager state: {err}") from err
    if not isinstance(data, dict):
        raise InputError(str(path), "is not a CPU manager checkpoint (a JSON object)")
    try:
        entries = {
            str(uid): {str(ctr): CpuSet.parse(str(cpus)) for ctr, cpus in (pod or {}).items()}
            for uid, pod in (data.get("entries") or {}).items()
        }
        return CpuManagerState(
            policy=str(data.get("policyName") or "none"),
            default_cpus=CpuSet.parse(str(data.get("defaultCpuSet") or "")),
            entries=entries,
        )
    except (ValueError, AttributeError) as err:
        raise InputError(str(path), f"malformed CPU manager state: {err}") from err


@dataclass(frozen=True, slots=True)
class KubeletConfig:
    """The parts of a KubeletConfiguration corral honours."""

    reserved_cpus: CpuSet | None = None  # reservedSystemCPUs / --reserved-cpus
    reserved_cpu_count: int = 0  # ceil(kubeReserved.cpu + systemReserved.cpu)
    cpu_manager_policy: str = "none"
    topology_manager_policy: str = "none"
    topology_manager_scope: str = "container"


def _cpu(section: Any, where: str) -> float:
    if not isinstance(section, dict) or "cpu" not in section:
        return 0.0
    return float(parse_quantity(section["cpu"], field=f"{where}.cpu"))


def read_kubelet_config(path: Path) -> KubeletConfig | None:
    """The KubeletConfiguration at ``path`` (None when absent)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as err:
        raise InputError(str(path), f"cannot read kubelet's config: {err}") from err
    if not isinstance(doc, dict):
        raise InputError(str(path), "is not a KubeletConfiguration")
    reserved = doc.get("reservedSystemCPUs")
    return KubeletConfig(
        reserved_cpus=CpuSet.parse(str(reserved)) if reserved else None,
        reserved_cpu_count=math.ceil(
            _cpu(doc.get("kubeReserved"), f"{path}: kubeReserved")
            + _cpu(doc.get("systemReserved"), f"{path}: systemReserved")
        ),
        cpu_manager_policy=str(doc.get("cpuManagerPolicy") or "none"),
        topology_manager_policy=str(doc.get("topologyManagerPolicy") or "none"),
        topology_manager_scope=str(doc.get("topologyManagerScope") or "container"),
    )


def reserved_from(
    config: KubeletConfig | None,
    *,
    reserved_cpus: str | None,
    kube_reserved_cpu: str | None,
    system_reserved_cpu: str | None,
) -> int | str | None:
    """The agent's ``reserved_cpus`` from kubelet's reservation: an explicit list
    (``--reserved-cpus`` / reservedSystemCPUs) wins, else the count kube-reserved +
    system-reserved round up to (kubelet takes that many, packed from the lowest cores);
    None when kubelet reserves nothing corral knows of."""
    if reserved_cpus:
        return str(CpuSet.parse(reserved_cpus))
    if config is not None and config.reserved_cpus:
        return str(config.reserved_cpus)
    flags = sum(
        float(parse_quantity(q, field=f))
        for q, f in (
            (kube_reserved_cpu, "kube_reserved_cpu"),
            (system_reserved_cpu, "system_reserved_cpu"),
        )
        if q
    )
    count = math.ceil(flags) if flags else (config.reserved_cpu_count if config else 0)
    return count or None


STATIC_REFUSED = (
    "kubelet runs the static CPU manager (cpuManagerPolicy: static, {path}): it rewrites the "
    "cpuset of every container it runs whenever its own pools change and after each "
    "restart, so corral's cpusets would be overwritten. Run kubelet with "
    "--cpu-manager-policy=none (drain the node, remove {path}, restart kubelet), or set "
    "kube.static_cpu_manager: avoid to keep corral off the CPUs kubelet holds."
)
STATIC_AVOIDED = (
    "kubelet runs the static CPU manager: corral keeps off the {count} CPUs it holds "
    "exclusively ({cpus}) but kubelet may still rewrite the cpusets of shared-pool pods; "
    "--cpu-manager-policy=none is the supported setting"
)
