"""The BE box's CPU weight ladder and, as a last resort, its CFS quota ladder.

Measured on this project's VM (design.md section 5): the damage BE does to a
latency-critical service is scheduling delay, and a BE group at ``cpu.idle`` = 1 or
``cpu.shares`` = 2 almost removes it while BE keeps most of a CPU; a CFS quota does not
help (BE still runs at full weight inside its quota, and throttling comes in bursts). So
the weight ladder starts at ``idle`` and the quota ladder is only shrunk once cores and
weight are at their floor.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import InputError

IDLE = "idle"


@dataclass(frozen=True, slots=True)
class WeightLevel:
    """A BE CPU weight: ``idle`` (cgroup ``cpu.idle`` = 1) or ``cpu.shares``."""

    idle: bool
    shares: int | None

    def __str__(self) -> str:
        return "idle" if self.idle else f"shares={self.shares}"


@dataclass(frozen=True, slots=True)
class WeightSettings:
    """Ladders of the CPU weight and quota knobs."""

    ladder: tuple[str, ...] = (IDLE, "2")
    """BE weights from the most protective: ``idle`` then ``cpu.shares`` values. The
    controller starts BE at the first and grows only with large slack. A heavier rung
    (e.g. "64") buys BE nothing while LC is light - an idle group already gets every
    spare cycle - and brings the scheduling delay back when LC is busy, so it is not
    in the default ladder; a BE box that starts heavier is shrunk rung by rung."""
    grow_slack: float = 0.5
    """Slack above which the weight (not only cores) may grow: a heavier BE delays LC."""
    quota_ladder: tuple[float, ...] = (0.25, 0.5)
    """BE CFS quota as a fraction of its cores, from the most restrictive; the top rung
    (one past the end) is no quota."""

    def __post_init__(self) -> None:
        if not self.ladder:
            raise InputError("weight.ladder", "is empty", "e.g. ['idle', '2', '64']")
        for i, rung in enumerate(self.ladder):
            if rung != IDLE and (not rung.isdigit() or not 2 <= int(rung) <= 262144):
                raise InputError(
                    f"weight.ladder[{i}]",
                    f"{rung!r} is neither 'idle' nor cpu.shares in 2..262144",
                    "use 'idle' or an integer such as 2",
                )
        for i, q in enumerate(self.quota_ladder):
            if not 0 < q < 1:
                raise InputError(f"weight.quota_ladder[{i}]", f"{q} not in (0, 1)", "e.g. 0.5")

    def weight(self, level: int) -> WeightLevel:
        """The weight at ladder ``level``."""
        rung = self.ladder[level]
        return (
            WeightLevel(idle=True, shares=None) if rung == IDLE else WeightLevel(False, int(rung))
        )

    def quota_cpus(self, level: int, be_cpus: int) -> float | None:
        """The BE quota in CPUs at ladder ``level`` (None: no quota)."""
        if level >= len(self.quota_ladder):
            return None
        return self.quota_ladder[level] * be_cpus
