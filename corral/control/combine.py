"""Several LC workloads on one host: each judged against its own SLO, the worst one rules.

The BE box is shared, so the controller follows the LC workload with the least slack and
the highest load (as a fraction of its own peak). A workload whose window was noisy is
left out of that window; the combined window is noisy only when every workload with data
was.

The sources are read concurrently, each bounded by its own ``timeout_s`` (a backstop
behind the source's own timeout, for a source that hangs). A workload whose source is
slow, failed or had no data this period has *no signal*, and the combination is
conservative: **any LC workload without a signal makes the whole observation "no
signal"**, so the controller holds BE. The others' slack is still computed (and shown),
but BE may not grow on it: growth on the workloads that can be seen could be exactly what
hurts the one that cannot, and shrinking on a guess would be as blind. Each workload's
signal is in ``Observation.signals`` under the workload's name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from corral.control.runtime import SignalSource
from corral.control.signals import Observation, Signal, SignalStatus
from corral.control.slo import Slo
from corral.errors import CorralError, InputError


@dataclass(frozen=True, slots=True)
class LcSignal:
    """One LC workload's SLO, latency source and peak throughput (requests/s).

    ``timeout_s`` is the longest a read of the source may take before the workload's
    signal counts as slow (the read is then cancelled)."""

    name: str
    slo: Slo
    source: SignalSource
    peak_rps: float | None = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise InputError(f"{self.name}.timeout_s", f"{self.timeout_s} is not positive")


class CombinedSource:
    """A `SignalSource` reporting the worst slack and the highest load of its workloads."""

    def __init__(
        self, workloads: Sequence[LcSignal], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.workloads = tuple(workloads)
        self._clock = clock
        self.last: dict[str, Observation] = {}

    def status(self) -> list[dict[str, Any]]:
        """Each LC workload's SLO, signal and what its source said last (for /status)."""
        out: list[dict[str, Any]] = []
        for w in self.workloads:
            obs = self.last.get(w.name, Observation())
            latency = obs.latency_ms
            signal = obs.signals[0] if obs.signals else None
            out.append(
                {
                    "name": w.name,
                    "slo": {"percentile": w.slo.percentile, "target_ms": w.slo.target_ms},
                    "latency_ms": latency,
                    "slack": None if latency is None else round(w.slo.slack(latency), 4),
                    "load_rps": obs.load_rps,
                    "noisy": obs.noisy,
                    "signal": None if signal is None else str(signal.status),
                    "signal_reason": None if signal is None else signal.reason,
                }
            )
        return out

    async def read(self, now: float) -> Observation:
        """The binding workload's slack and load this period (every source read at once);
        "no signal" when any workload has none (see the module docstring)."""
        observations = await asyncio.gather(*(self._read_one(w, now) for w in self.workloads))
        slacks: list[tuple[float, float]] = []  # (slack, latency)
        loads: list[float] = []
        noisy_any = False
        samples = 0
        for w, obs in zip(self.workloads, observations, strict=True):
            self.last[w.name] = obs
            samples += obs.samples
            if obs.load_rps is not None and w.peak_rps:
                loads.append(obs.load_rps / w.peak_rps)
            elif obs.load is not None:
                loads.append(obs.load)
            if obs.latency_ms is None or obs.lost:
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
            signals=tuple(s for obs in observations for s in obs.signals),
        )

    async def _read_one(self, w: LcSignal, now: float) -> Observation:
        """One workload's observation with exactly one signal, named after the workload."""
        start = self._clock()
        try:
            async with asyncio.timeout(w.timeout_s):
                obs = await w.source.read(now)
        except TimeoutError:
            obs = Observation(
                signals=(Signal(w.name, SignalStatus.SLOW, f"no answer within {w.timeout_s:g} s"),)
            )
        except (CorralError, OSError) as err:
            obs = Observation(
                signals=(Signal(w.name, SignalStatus.FAILED, str(err) or type(err).__name__),)
            )
        read_s = self._clock() - start
        lost = obs.lost
        if lost:
            signal = replace(lost[0], source=w.name, read_s=read_s)
        elif obs.latency_ms is None:
            signal = Signal(w.name, SignalStatus.NO_DATA, "no latency this period", read_s=read_s)
        else:
            signal = Signal(w.name, latency_ms=obs.latency_ms, read_s=read_s)
        return replace(obs, signals=(signal,))
