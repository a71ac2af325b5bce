"""Several LC workloads on one host: each judged against its own SLO, the worst one rules.

The BE box is shared, so the controller follows the LC workload with the least slack and
the highest load (as a fraction of its own peak). A workload whose window was noisy is
left out of that window; the combined window is noisy only when every workload with data
was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral.control.runtime import SignalSource
from corral.control.signals import Observation
from corral.control.slo import Slo


@dataclass(frozen=True, slots=True)
class LcSignal:
    """One LC workload's SLO, latency source and peak throughput (requests/s)."""

    name: str
    slo: Slo
    source: SignalSource
    peak_rps: float | None = None


class CombinedSource:
    """A `SignalSource` reporting the worst slack and the highest load of its workloads."""

    def __init__(self, workloads: Sequence[LcSignal]) -> None:
        self.workloads = tuple(workloads)
        self.last: dict[str, Observation] = {}

    def status(self) -> list[dict[str, Any]]:
        """Each LC workload's SLO and what its source said last (for /status)."""
        out: list[dict[str, Any]] = []
        for w in self.workloads:
            obs = self.last.get(w.name, Observation())
            latency = obs.latency_ms
            out.append(
                {
                    "name": w.name,
                    "slo": {"percentile": w.slo.percentile, "target_ms": w.slo.target_ms},
                    "latency_ms": latency,
                    "slack": None if latency is None else round(w.slo.slack(latency), 4),
                    "load_rps": obs.load_rps,
                    "noisy": obs.noisy,
                }
            )
        return out

    def read(self, now: float) -> Observation:
        """The binding workload's slack and load this period."""
        slacks: list[tuple[float, float]] = []  # (slack, latency)
        loads: list[float] = []
        noisy_any = False
        samples = 0
        for w in self.workloads:
            obs = w.source.read(now)
            self.last[w.name] = obs
            samples += obs.samples
            if obs.load_rps is not None and w.peak_rps:
                loads.append(obs.load_rps / w.peak_rps)
            elif obs.load is not None:
                loads.append(obs.load)
            if obs.latency_ms is None:
                continue
            if obs.noisy:
                noisy_any = True
                continue
            slacks.append((w.slo.slack(obs.latency_ms), obs.latency_ms))
        worst = min(slacks) if slacks else None
        return Observation(
            latency_ms=None if worst is None else worst[1],
            slack=None if worst is None else worst[0],
            load=max(loads) if loads else None,
            samples=samples,
            noisy=noisy_any and not slacks,
        )
