"""GPU device choice by memory (the gpushare design): a pod's ``corral.io/gpu-mem`` must fit
on ONE device; among the devices with room the one with the least free memory is taken
(binpack, lowest index on ties), which keeps large holes for large pods.

corral schedules and accounts GPU memory; it does not isolate it: nothing stops a process
from using more GPU memory or compute than its pod asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.kube.extender.topo import GpuState


def fitting_devices(gpus: Sequence[GpuState], need_mib: int) -> list[GpuState]:
    """The devices with at least ``need_mib`` MiB free."""
    return [g for g in gpus if g.memory_available >= need_mib]


def choose_device(gpus: Sequence[GpuState], need_mib: int) -> GpuState | None:
    """The fitting device with the least free memory (lowest index on ties), or None."""
    fits = fitting_devices(gpus, need_mib)
    return min(fits, key=lambda g: (g.memory_available, g.index)) if fits else None


def could_ever_fit(gpus: Sequence[GpuState], need_mib: int) -> bool:
    """True when some device is big enough when empty (else no preemption can help)."""
    return any(g.memory_total >= need_mib for g in gpus)
