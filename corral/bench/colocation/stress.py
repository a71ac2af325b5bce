"""BE antagonists: stress-ng stressors and their own throughput metric (bogo ops).

Each antagonist names a stress-ng stressor and its options. ``cpu``, ``cache``, ``vm``,
``stream`` and ``matrix`` are the CPU and memory-hierarchy antagonists of the default
pattern; ``fork``, ``hdd``, ``udp`` and ``vm-big`` work mostly in the kernel (process
creation, page cache and writeback, loopback networking, page faults over a large
anonymous set), which a BE ``cpu.idle`` group does not contain: the kernel threads that
flush its dirty pages and the softirqs of its packets run outside the BE box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class Antagonist:
    """A stress-ng stressor with its options; ``workers`` is per CPU."""

    stressor: str
    options: tuple[str, ...] = ()
    workers_per_cpu: int = 1


ANTAGONIST_SPECS: dict[str, Antagonist] = {
    "cpu": Antagonist("cpu"),
    "cache": Antagonist("cache"),
    "vm": Antagonist("vm", ("--vm-bytes", "64M")),
    "stream": Antagonist("stream", ("--stream-l3-size", "4M")),
    "matrix": Antagonist("matrix"),
    "fork": Antagonist("fork", workers_per_cpu=2),
    "hdd": Antagonist("hdd", ("--hdd-bytes", "256M", "--hdd-write-size", "1M")),
    "udp": Antagonist("udp"),
    "vm-big": Antagonist("vm", ("--vm-bytes", "1G", "--vm-keep")),
}
ANTAGONISTS = tuple(ANTAGONIST_SPECS)
_METRIC = re.compile(r"metrc:\s*\[\d+\]\s+(?P<name>[a-z0-9-]+)\s+(?P<ops>\d+)\s+(?P<real>[\d.]+)")


def jobs(antagonist: str) -> tuple[str, ...]:
    """The stress-ng jobs an antagonist runs side by side, each as a BE workload of its
    own: ``cpu+vm-big`` is a ``cpu`` job beside a ``vm-big`` job."""
    return tuple(antagonist.split("+"))


def check_antagonists(names: tuple[str, ...]) -> None:
    """`InputError` naming the first unknown antagonist (or job of a ``a+b`` one)."""
    for i, name in enumerate(names):
        for job in jobs(name):
            if job not in ANTAGONIST_SPECS:
                raise InputError(
                    f"--antagonist[{i}]",
                    f"unknown antagonist {job!r}",
                    f"use {', '.join(ANTAGONISTS)}, or several joined by + (cpu+vm-big)",
                )


def stress_argv(
    antagonist: str, workers: int, seconds: float, *, temp_path: Path | None = None
) -> list[str]:
    """A stress-ng command running ``antagonist`` with ``workers`` per its per-CPU count
    (``workers`` is the CPU count the BE may use); its files (``hdd``) go to
    ``temp_path``, never the working directory."""
    spec = ANTAGONIST_SPECS[antagonist]
    return [
        "stress-ng",
        f"--{spec.stressor}",
        str(workers * spec.workers_per_cpu),
        *spec.options,
        *(["--temp-path", str(temp_path)] if temp_path is not None else []),
        "--metrics-brief",
        "--timeout",
        f"{max(1, round(seconds))}s",
    ]


def bogo_ops(output: str, antagonist: str) -> float | None:
    """Total bogo ops stress-ng reported for ``antagonist`` (None if it reported none)."""
    stressor = (
        ANTAGONIST_SPECS[antagonist].stressor if antagonist in ANTAGONIST_SPECS else antagonist
    )
    for match in _METRIC.finditer(output):
        if match["name"] == stressor:
            return float(match["ops"])
    return None
