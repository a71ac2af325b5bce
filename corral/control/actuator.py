"""What every controller actuator offers; the factory is `corral.control.factory`.

`ControlActuator.describe` says what the actuator can and cannot do on this host, each
"cannot" with its reason (for ``/status``); `fit_cache` gives the cache settings the host
can honour, so a controller built with them never emits a `SetCache` that would be refused.
An action the host cannot perform is refused with `CorralError`, never skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from corral.control.actions import Action
from corral.control.cache import CacheSettings
from corral.enforce.cgroupfs import child_dirs, list_pids

Writer = Callable[[str, str], None]
Reader = Callable[[str], str | None]

DEFAULT_RESCTRL = Path("/sys/fs/resctrl")


class Capability(StrEnum):
    """The things an actuator may be asked to do (one per action kind and knob)."""

    CPUS = "cpus"
    WEIGHT = "weight"
    IDLE = "idle"
    QUOTA = "quota"
    MEMORY = "memory"
    PSI = "psi"
    EXCLUSIVE_CPUS = "exclusive_cpus"
    LLC_WAYS = "llc_ways"
    MEMORY_BANDWIDTH = "memory_bandwidth"
    WORKLOAD_WAYS = "workload_ways"
    FREEZE = "freeze"
    EVICT = "evict"


@dataclass(frozen=True)
class ActuatorDescription:
    """What an actuator does on this host: ``can`` maps a capability to how (the file it
    writes), ``cannot`` to why not."""

    kind: str
    can: dict[Capability, str] = field(default_factory=dict)
    cannot: dict[Capability, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form for /status."""
        return {
            "kind": self.kind,
            "can": {str(k): v for k, v in sorted(self.can.items())},
            "cannot": {str(k): v for k, v in sorted(self.cannot.items())},
        }


class ControlActuator(Protocol):
    """The runtime's `Actuator` plus what the agent needs to wire and show it."""

    def apply(self, action: Action) -> None:
        """Apply ``action``; raise `CorralError` when the kernel or host refuses."""
        ...

    def describe(self) -> ActuatorDescription:
        """What this actuator can and cannot do here, and why."""
        ...

    def fit_cache(self, settings: CacheSettings) -> CacheSettings:
        """``settings`` as this host can do them (cache ladders off without resctrl)."""
        ...

    def workloads(self) -> tuple[str, ...]:
        """The BE workloads (child cgroups of the BE box)."""
        ...

    def frozen(self) -> tuple[str, ...]:
        """BE workloads frozen now."""
        ...

    def be_memory_bytes(self) -> int | None:
        """The BE box's memory use, None if unreadable."""
        ...

    def be_psi_some_us(self) -> int | None:
        """The BE box's cumulative memory PSI ``some`` total (us), None if unavailable."""
        ...

    def be_oom_kills(self, workloads: Sequence[str]) -> dict[str, int | None]:
        """Each BE workload's OOM kills so far (None: unreadable)."""
        ...


def parse_oom_kills(text: str | None, key: str = "oom_kill") -> int | None:
    """The ``oom_kill`` count of a v1 ``memory.oom_control`` or v2 ``memory.events`` file
    (None when the file or the line is missing)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def tree_pids(directory: Path) -> tuple[int, ...]:
    """Every pid in the cgroup at ``directory`` and its descendants (empty if missing)."""
    pids = list(list_pids(directory))
    for child in child_dirs(directory):
        pids.extend(tree_pids(directory / child))
    return tuple(pids)


def parse_psi_total(text: str, kind: str) -> int | None:
    """``total=`` of the ``some``/``full`` line of a PSI file, None when absent."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == kind:
            for part in parts[1:]:
                key, _, value = part.partition("=")
                if key == "total" and value.isdigit():
                    return int(value)
    return None
