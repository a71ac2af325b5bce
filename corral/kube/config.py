"""Settings of the agent's Kubernetes mode (the ``kube:`` section of the agent config, and
``corral agent --kubeconfig/--node-name/--kubelet-root``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.errors import InputError


class StaticCpuManager(StrEnum):
    """What to do when kubelet runs the static CPU manager policy."""

    REFUSE = "refuse"  # stop at start-up: kubelet rewrites every container's cpuset
    AVOID = "avoid"  # keep off the CPUs kubelet holds (and warn: shared pods still fight)


class GpuDevice(BaseModel):
    """One GPU published as an NRT zone of type GPU (when nvidia-smi is not there)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0, le=255)
    memory_mib: int = Field(gt=0, le=2**24)
    numa_node: int | None = Field(default=None, ge=0)


class KubeSettings(BaseModel):
    """How the agent runs as a Kubernetes node component."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_name: str = Field(default="", description="This node's name ($NODE_NAME in a pod).")
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; absent: the in-cluster service account."
    )
    kubelet_root: Path = Field(
        default=Path("/var/lib/kubelet"),
        description="kubelet's root directory (its cpu_manager_state and config.yaml).",
    )
    kubelet_config: Path | None = Field(
        default=None,
        description="kubelet's KubeletConfiguration file (default <kubelet_root>/config.yaml "
        "when present): reservedSystemCPUs, kubeReserved/systemReserved cpu, "
        "cpuManagerPolicy, topologyManagerPolicy.",
    )
    reserved_cpus: str | None = Field(
        default=None,
        description="kubelet's --reserved-cpus list, when not in its config file.",
    )
    kube_reserved_cpu: str | None = Field(
        default=None, description="kubelet's --kube-reserved cpu= quantity."
    )
    system_reserved_cpu: str | None = Field(
        default=None, description="kubelet's --system-reserved cpu= quantity."
    )
    static_cpu_manager: StaticCpuManager = Field(
        default=StaticCpuManager.REFUSE,
        description="refuse (default) or avoid, when kubelet's cpuManagerPolicy is static.",
    )
    topology_manager_policy: str | None = Field(
        default=None,
        description="Published as topologyManagerPolicy (default: kubelet config's, else none).",
    )
    batch_cpu_margin: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Share of the node's allocatable CPU kept out of corral.io/batch-cpu.",
    )
    batch_memory_margin: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Share of the node's allocatable memory kept out of corral.io/batch-memory.",
    )
    publish_min_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Fewest seconds between two NRT writes (changes in between coalesce).",
    )
    publish_period_s: float = Field(
        default=60.0, gt=0, description="Republish at least this often (NRT and node status)."
    )
    evict: bool = Field(default=True, description="Evict BE pods when batch capacity stays short.")
    evict_after_s: float = Field(
        default=30.0, gt=0, description="How long batch capacity must stay short first."
    )
    evict_interval_s: float = Field(
        default=10.0, gt=0, description="At most one eviction per this many seconds."
    )
    gpus: tuple[GpuDevice, ...] | None = Field(
        default=None, description="GPUs to publish; absent: nvidia-smi when on PATH, else none."
    )
    annotate_concurrency: int = Field(
        default=8, ge=1, le=64, description="Pod patches in flight at once."
    )


def kube_settings(data: dict[str, Any] | None, overrides: dict[str, Any]) -> KubeSettings:
    """The ``kube`` section with CLI ``overrides`` applied; `InputError` names a bad field."""
    merged = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return KubeSettings.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        fix = f"allowed keys: {', '.join(KubeSettings.model_fields)}"
        raise InputError(f"kube.{field}", str(first["msg"]), fix) from None
