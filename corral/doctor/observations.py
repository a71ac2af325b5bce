"""What the probes saw, as plain values: the input of the pure evaluation.

Each probe in `corral.doctor.probes` reads one part of the host under a root path and
returns one of these; `corral.doctor.evaluate` turns them into findings without touching
the OS, so every verdict can be tested from hand-written observations.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The controllers doctor looks for: the three corral writes, the v1 CPU accounting one and
#: the freezer the colocation controller uses to stop best-effort work.
WANTED_CONTROLLERS: tuple[str, ...] = ("cpu", "cpuacct", "cpuset", "memory", "freezer")
#: Without these two, corral cannot enforce cpusets and CPU isolation at all.
REQUIRED_CONTROLLERS: tuple[str, ...] = ("cpuset", "cpu")


@dataclass(frozen=True, slots=True)
class ControllerHome:
    """Where a controller is served: the hierarchy's path and its version (v1 or v2)."""

    controller: str
    path: str
    version: str


@dataclass(frozen=True, slots=True)
class WriteProbe:
    """A probe cgroup created and removed in one hierarchy: did each step work."""

    hierarchy: str
    controllers: tuple[str, ...]
    probe: str
    created: bool
    removed: bool
    error: str = ""
    """The refusal (``mkdir``/``rmdir`` with errno), empty when both steps worked."""
    files: tuple[str, ...] = ()
    """The files of interest the probe cgroup had: ``*.pressure`` (per-cgroup PSI, v2) and
    ``cpu.idle``."""


@dataclass(frozen=True, slots=True)
class CgroupObservation:
    """How cgroups are mounted under the root and whether corral may write them."""

    root: str
    mode: str
    """``v1``, ``v2``, ``hybrid`` or ``none``."""
    homes: tuple[ControllerHome, ...]
    v2_path: str | None
    v2_controllers: tuple[str, ...]
    """The v2 mount's ``cgroup.controllers`` (what it could delegate)."""
    v2_subtree: tuple[str, ...]
    """The v2 mount's ``cgroup.subtree_control`` (what its children get)."""
    writes: tuple[WriteProbe, ...]
    cpu_idle: bool | None
    """Whether the cpu controller has ``cpu.idle`` (Linux 5.15+); None when unknown (v2
    without the cpu controller in a probe cgroup)."""
    euid: int

    def home(self, controller: str) -> ControllerHome | None:
        """Where ``controller`` is served, or None when it is not."""
        return next((h for h in self.homes if h.controller == controller), None)

    def write_of(self, path: str) -> WriteProbe | None:
        """The write probe made in the hierarchy at ``path``, if one was made."""
        return next((w for w in self.writes if w.hierarchy == path), None)


@dataclass(frozen=True, slots=True)
class PsiObservation:
    """System-wide pressure files: resource -> its ``some`` line, or why it is unreadable."""

    lines: tuple[tuple[str, str], ...]
    errors: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RdtObservation:
    """Intel RDT / AMD PQoS: CPU flags, kernel support, the resctrl mount and what it offers."""

    flags: tuple[str, ...]
    """The RDT-related flags of ``/proc/cpuinfo`` (``rdt_a``, ``cat_l3``, ``mba``...)."""
    kernel_resctrl: bool
    """``resctrl`` is listed in ``/proc/filesystems``."""
    mount: str
    mounted: bool
    resources: tuple[tuple[str, int], ...] = ()
    """Control resources of ``info/`` (``L3``, ``L2``, ``MB``...) with their CLOSID count."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class PerfObservation:
    """Whether hardware counters (cycles, instructions, LLC misses) can be opened."""

    available: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CpuObservation:
    """SMT state and the topology corral's loader reads from sysfs."""

    smt_active: str | None
    smt_control: str | None
    max_siblings: int | None
    """The largest ``thread_siblings_list`` among online CPUs."""
    cpus: int = 0
    cores: int = 0
    sockets: int = 0
    numa_nodes: int = 0
    l3_domains: int = 0
    topology_error: str = ""


@dataclass(frozen=True, slots=True)
class KubeletObservation:
    """kubelet's CPU manager on this node: its config file, its process and its checkpoint."""

    config_path: str
    config_policy: str | None
    """``cpuManagerPolicy`` of the config file (None: no file)."""
    process_pid: int | None
    process_policy: str | None
    """``--cpu-manager-policy`` on kubelet's command line, if given."""
    state_path: str
    state_policy: str | None
    """``policyName`` of ``cpu_manager_state`` (None: no checkpoint)."""
    default_cpus: str = ""
    entries: int = 0
    exclusive_cpus: str = ""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolObservation:
    """One external program: where it was found (None: not on the search path)."""

    name: str
    path: str | None


@dataclass(frozen=True, slots=True)
class K8sObservation:
    """The Kubernetes binaries the kube tests start, shipped under ``shared/k8s``."""

    directory: str | None
    binaries: tuple[str, ...] = ()
    """The ``bin/*.xz`` files found there."""


@dataclass(frozen=True, slots=True)
class ClockObservation:
    """The clock source, and whether the host looks like a VM (and is being descheduled)."""

    current: str | None
    available: tuple[str, ...]
    hypervisor: bool
    """The ``hypervisor`` flag of ``/proc/cpuinfo``."""
    steal_ticks: int | None
    total_ticks: int | None


@dataclass(frozen=True, slots=True)
class HostObservation:
    """Everything the probes saw on one host."""

    cgroups: CgroupObservation
    psi: PsiObservation
    rdt: RdtObservation
    perf: PerfObservation | None
    cpu: CpuObservation
    kubelet: KubeletObservation
    tools: tuple[ToolObservation, ...]
    k8s: K8sObservation
    clock: ClockObservation
