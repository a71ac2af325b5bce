"""The small error hierarchy corral raises at its boundaries.

Every error carries a message meant for an operator: it names what was wrong and, where
there is one, the fix. The CLI prints it without a traceback; the HTTP API maps it to a 4xx.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error corral raises on purpose."""


class InputError(CorralError, ValueError):
    """Bad input (a file, a flag, an API body): names the field and how to fix it.

    `field` is a dotted path such as ``workloads[3].cpus``; it is empty when the error
    concerns the whole input.
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{field}: " if field else ""
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{where}{problem}{hint}")


class TopologyError(InputError):
    """A topology that cannot be read or is inconsistent."""


class PlacementError(CorralError):
    """A request that cannot be placed; the message says which workload and why."""

    def __init__(self, message: str, *, workload_id: str | None = None) -> None:
        self.workload_id = workload_id
        super().__init__(message)


class EnforcementError(CorralError):
    """A write to the kernel (cgroupfs, resctrl) failed; names the file and errno."""
