"""The baseline: the cheapest isolation that lets BE run harmlessly, and where BE rests.

Measured on this project's VM (design.md section 5, issue 16), the BE box at ``cpu.idle``
= 1 on every CPU LC does not hold exclusively removes most of the scheduling delay BE
causes, and as a fixed policy (the benchmark's ``static-idle``: every CPU, ``cpu.idle``,
no quota, no memory probe beyond the box limit) it gave more EMU than the Heracles ladder
started from a small BE. So the controller starts BE there instead of cold, and the
dynamic knobs only take BE below it (fewer cores, a quota, the LLC/MBA ladders, a freeze)
when measured slack says the baseline is not enough; growth gives back up to the
baseline and, unless ``grow_above``, no further. With no violation found to be BE's, the
levels return to the baseline: in steady state the controller is the static policy. The
memory probe (senpai) follows the same rule unless ``probe_memory_always``.

On a host with SMT the baseline's cores are every core but the LC reserve
(`corral.control.cores`); with CAT or MBA, the top of their ladders (BE unrestricted).
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class BaselineSettings:
    """Where BE starts and rests (see the module docstring)."""

    enabled: bool = True
    """Start BE at the baseline and return to it (off: Heracles' cold start, BE at its
    floor growing one trial at a time up to the top of every ladder)."""
    weight: str = "idle"
    """The baseline CPU weight, a rung of ``weight.ladder`` (``idle``: ``cpu.idle`` = 1)."""
    cores: int | None = None
    """Baseline BE cores; None: the top of the cores ladder (every CPU LC does not hold
    exclusively, as ``static-idle`` gives it)."""
    grow_above: bool = False
    """Let growth trials take BE above the baseline (e.g. a heavier weight). Off: above
    an idle group BE gains little CPU and LC can lose the protection ``cpu.idle`` gives."""

    probe_memory_always: bool = False
    """Run senpai's memory probe (``memory.enabled``) at all times. Off: it runs only
    while slack is short and BE runs (``shrink``, not frozen: a frozen BE touches no
    memory and the reclaim of a lower limit costs the host CPU); when slack is back the BE box's
    memory limit is released to ``memory.max_bytes`` and the probe starts again from BE's
    use the next time it is needed - at the baseline BE has the whole box, as a static
    ``cpu.idle`` group does."""

    def __post_init__(self) -> None:
        if self.cores is not None and self.cores < 1:
            raise InputError("baseline.cores", f"{self.cores} is below 1", "or null: all")
