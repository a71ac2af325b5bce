"""The control loop: read the signals, take the pure step, apply the actions.

`ColocationRuntime` is the seam for the node agent: ``await start()`` / ``await stop()``
run the loop as one asyncio task; `status` is a JSON-able dict for ``/status``;
`snapshot` feeds `corral.control.metrics.ControlCollector`. `tick` is the loop's body,
callable on its own (the benchmark drives it from its own schedule).

Every action is logged (``control.action``, with its reason) and kept in a short history;
a refused write is logged (``control.action_failed``) and the next tick re-applies the
whole BE state, so a transient refusal cannot leave the kernel and the controller apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from corral.control.actions import Action, describe
from corral.control.controller import Controller, ControllerState
from corral.control.evict import BeWorkload
from corral.control.signals import Observation
from corral.errors import CorralError

logger = logging.getLogger(__name__)


class SignalSource(Protocol):
    """Where LC latency and load come from (prober, scraper, file)."""

    def read(self, now: float) -> Observation:
        """This period's observation."""
        ...


class Actuator(Protocol):
    """Applies one action to the kernel."""

    def apply(self, action: Action) -> None:
        """Apply ``action``; raise `CorralError` when the kernel refuses."""
        ...


class Service(Protocol):
    """Something that runs beside the loop (a prober): started and stopped with it."""

    async def start(self) -> None:
        """Start."""
        ...

    async def stop(self) -> None:
        """Stop and release everything."""
        ...


class MemorySignals(Protocol):
    """The BE box's memory readings (for senpai)."""

    def be_memory_bytes(self) -> int | None:
        """Current use in bytes."""
        ...

    def be_psi_some_us(self) -> int | None:
        """Cumulative memory PSI ``some`` total in microseconds."""
        ...


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One applied (or refused) action."""

    at: float
    kind: str
    what: str
    reason: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the metrics show at one scrape."""

    mode: str
    slack: float | None
    load: float | None
    be_cores: int
    be_idle: bool
    be_shares: int | None
    frozen: int
    actions: dict[str, int]
    failures: int


class ColocationRuntime:
    """Runs a `Controller` against real signals and an actuator (see module docstring)."""

    def __init__(
        self,
        controller: Controller,
        *,
        source: SignalSource,
        actuator: Actuator,
        memory: MemorySignals | None = None,
        workloads: Callable[[], Sequence[BeWorkload]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        history: int = 100,
        services: Sequence[Service] = (),
    ) -> None:
        self.controller = controller
        self.state: ControllerState = controller.initial()
        self._source = source
        self._actuator = actuator
        self._memory = memory
        self._workloads = workloads
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._services = tuple(services)
        self.history: deque[ActionRecord] = deque(maxlen=history)
        self.action_counts: Counter[str] = Counter()
        self.failures = 0
        self.last_observation = Observation()

    @property
    def period_s(self) -> float:
        """How often the loop ticks: the shorter of the top and sub-controller periods."""
        s = self.controller.settings
        return min(s.top.period_s, s.sub_period_s)

    def observe(self, now: float) -> Observation:
        """This tick's signals: the latency source plus the BE box's memory readings."""
        obs = self._source.read(now)
        if self._memory is not None:
            obs = replace(
                obs,
                psi_some_us=self._memory.be_psi_some_us(),
                be_memory_bytes=self._memory.be_memory_bytes(),
            )
        return obs

    def tick(self) -> tuple[Action, ...]:
        """One period: observe, step, apply. Returns the actions taken."""
        now = self._clock()
        obs = self.observe(now)
        self.last_observation = obs
        workloads = tuple(self._workloads()) if self._workloads is not None else ()
        previous_mode = self.state.top.mode
        state, actions = self.controller.step(self.state, obs, now, workloads=workloads)
        if state.top.mode is not previous_mode:
            logger.info(
                "control.mode",
                extra={"mode": str(state.top.mode), "reason": state.top.reason},
            )
        failed = False
        for action in actions:
            kind = type(action).__name__
            what = describe(action)
            try:
                self._actuator.apply(action)
            except CorralError as err:
                failed = True
                self.failures += 1
                self.history.append(ActionRecord(now, kind, what, action.reason, str(err)))
                logger.warning(
                    "control.action_failed",
                    extra={"action": what, "reason": action.reason, "error": str(err)},
                )
                continue
            self.action_counts[kind] += 1
            self.history.append(ActionRecord(now, kind, what, action.reason))
            logger.info("control.action", extra={"action": what, "reason": action.reason})
        # After a refusal, re-render every knob next tick (applied=False).
        self.state = replace(state, applied=False) if failed else state
        return actions

    async def start(self) -> None:
        """Start the services (probers), then the loop as one asyncio task (idempotent)."""
        if self._task is None:
            for service in self._services:
                await service.start()
            self._task = asyncio.create_task(self._run(), name="corral-colocation")

    async def stop(self) -> None:
        """Stop the loop and the services; BE is left as the last action set it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            for service in self._services:
                await service.stop()

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except (CorralError, OSError) as err:
                # A signal source that fails this period: hold, try again next period.
                logger.warning("control.tick_failed", extra={"error": str(err)})
            await self._sleep(self.period_s)

    def status(self) -> dict[str, Any]:
        """The controller's state, the last observation and recent actions (for /status)."""
        doc = self.controller.status(self.state)
        obs = self.last_observation
        doc["observation"] = {
            "latency_ms": obs.latency_ms,
            "load_rps": obs.load_rps,
            "noisy": obs.noisy,
            "be_memory_bytes": obs.be_memory_bytes,
        }
        doc["actions"] = dict(self.action_counts)
        doc["failures"] = self.failures
        doc["recent"] = [
            {"at": r.at, "kind": r.kind, "what": r.what, "reason": r.reason, "error": r.error}
            for r in list(self.history)[-10:]
        ]
        return doc

    def snapshot(self) -> Snapshot:
        """Values for the metrics collector."""
        state = self.state
        weight = self.controller.settings.weight.weight(state.levels.weight)
        return Snapshot(
            mode=str(state.top.mode),
            slack=state.top.slack,
            load=state.top.load,
            be_cores=state.levels.cores,
            be_idle=weight.idle,
            be_shares=weight.shares,
            frozen=len(state.evict.frozen),
            actions=dict(self.action_counts),
            failures=self.failures,
        )
