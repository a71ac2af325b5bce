"""The control loop: read the signals, take the pure step, apply the actions.

`ColocationRuntime` is the seam for the node agent: `run` is the loop as a coroutine (the
agent runs it as one of its root tasks), ``await start()`` / ``await stop()`` run it as a
task of its own; `status` is a JSON-able dict for ``/status``; `snapshot` feeds
`corral.control.metrics.ControlCollector`. `tick` is the loop's body, callable on its own
(the benchmark drives it from its own schedule). `set_cores` re-bounds BE when the agent's
placement changes the BE pool; `reapply` writes the whole BE state again after another
writer (the agent's enforcement) touched the BE box.

Every action is logged (``control.action``, with its reason), kept in a short history and
handed to ``listener`` (the agent stores it as an event); so are mode changes. A refused
write is logged (``control.action_failed``) and the next tick re-applies the whole BE
state, so a transient refusal cannot leave the kernel and the controller apart. When the
loop stops, every workload it froze is thawed: a restarted controller starts from a fresh
state and would never thaw it.
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

from corral.control.actions import Action, Evict, Freeze, Thaw, describe
from corral.control.controller import Controller, ControllerState
from corral.control.evict import BeWorkload
from corral.control.signals import Observation
from corral.errors import CorralError
from corral.topology.cpuset import CpuSet

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
    """One applied (or refused) action, or a mode change (``kind`` ``"mode"``).

    ``workload`` names the BE workload a freeze, thaw or eviction acted on."""

    at: float
    kind: str
    what: str
    reason: str
    error: str | None = None
    workload: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form shown in /status."""
        return {
            "at": self.at,
            "kind": self.kind,
            "what": self.what,
            "reason": self.reason,
            "error": self.error,
            "workload": self.workload,
        }


class DryRunActuator:
    """Writes nothing: keeps the last actions it was asked to apply (a dry-run agent)."""

    def __init__(self, keep: int = 100) -> None:
        self.applied: deque[Action] = deque(maxlen=keep)

    def apply(self, action: Action) -> None:
        """Record ``action``."""
        self.applied.append(action)


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
        listener: Callable[[ActionRecord], None] | None = None,
        describe: Callable[[], list[dict[str, Any]]] | None = None,
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
        self._listener = listener
        self._describe = describe
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
            if self._listener is not None:
                mode = str(state.top.mode)
                self._listener(ActionRecord(now, "mode", f"mode {mode}", state.top.reason))
        failed = self._apply(actions, now)
        # After a refusal, re-render every knob next tick (applied=False).
        self.state = replace(state, applied=False) if failed else state
        return actions

    def _apply(self, actions: Sequence[Action], now: float, *, record: bool = True) -> bool:
        """Apply ``actions`` in order; True when one was refused. Unrecorded actions (a
        repeated write of an unchanged state) are only logged and reported when refused."""
        failed = False
        for action in actions:
            kind = type(action).__name__
            what = describe(action)
            workload = action.workload if isinstance(action, Freeze | Thaw | Evict) else None
            try:
                self._actuator.apply(action)
            except CorralError as err:
                failed = True
                self.failures += 1
                self._record(ActionRecord(now, kind, what, action.reason, str(err), workload))
                logger.warning(
                    "control.action_failed",
                    extra={"action": what, "reason": action.reason, "error": str(err)},
                )
                continue
            if not record:
                logger.debug("control.reapplied", extra={"action": what})
                continue
            self.action_counts[kind] += 1
            self._record(ActionRecord(now, kind, what, action.reason, workload=workload))
            logger.info("control.action", extra={"action": what, "reason": action.reason})
        return failed

    def _record(self, record: ActionRecord) -> None:
        self.history.append(record)
        if self._listener is not None:
            self._listener(record)

    @property
    def be_cpus(self) -> CpuSet:
        """The CPUs the BE box has now (as the controller last decided)."""
        return self.controller.be_cpus(self.state.levels)

    def set_cores(self, cores: Sequence[CpuSet]) -> bool:
        """Bound BE to these physical cores from now on (the BE pool the agent's placement
        left); the BE core count is clamped to the new ladder and a pending cores step is
        dropped. Returns True when the cores changed. Writes nothing: call `reapply`."""
        new = tuple(cores)
        if new == self.controller.cores:
            return False
        self.controller = replace(self.controller, cores=new)
        spec = self.controller.specs()["cores"]
        state = self.state
        pending = state.pending
        if pending is not None and pending.knob == "cores":
            pending = None
        levels = state.levels.with_level("cores", spec.clamp(state.levels.cores))
        self.state = replace(state, levels=levels, pending=pending)
        return True

    def reapply(self, reason: str, *, record: bool = False) -> tuple[Action, ...]:
        """Write the current BE CPUs, weight, quota and cache state again.

        With ``record`` the writes count as actions (the BE state changed, e.g. the pool
        did); without, only refusals are reported. A refusal makes the next tick re-apply.
        """
        actions = self.controller.render(self.state.levels, reason)
        if self._apply(actions, self._clock(), record=record):
            self.state = replace(self.state, applied=False)
        return actions

    def thaw(self, workloads: Sequence[str], reason: str) -> None:
        """Thaw ``workloads`` (recorded as actions) and forget that they were frozen."""
        if not workloads:
            return
        self._apply([Thaw(wid, reason) for wid in workloads], self._clock())
        gone = set(workloads)
        frozen = tuple((w, t) for w, t in self.state.evict.frozen if w not in gone)
        self.state = replace(self.state, evict=replace(self.state.evict, frozen=frozen))

    def thaw_all(self, reason: str) -> None:
        """Thaw every workload the controller froze and forget them."""
        self.thaw([wid for wid, _ in self.state.evict.frozen], reason)

    async def start(self) -> None:
        """Run `run` as an asyncio task of its own (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="corral-colocation")
            await asyncio.sleep(0)  # let it start its services

    async def stop(self) -> None:
        """Stop the task started by `start` (see `run` for what stopping does)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Start the services (probers), tick every `period_s` until cancelled, then thaw
        what the controller froze and stop the services. BE cores, weight and quota are
        left as the last action set them."""
        started: list[Service] = []
        try:
            for service in self._services:
                await service.start()
                started.append(service)
            while True:
                try:
                    self.tick()
                except (CorralError, OSError) as err:
                    # A signal source that fails this period: hold, try again next period.
                    logger.warning("control.tick_failed", extra={"error": str(err)})
                await self._sleep(self.period_s)
        finally:
            self.thaw_all("the controller is stopping")
            for service in reversed(started):
                await service.stop()

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
        if self._describe is not None:
            # Each LC workload has its own SLO; the controller's default SLO means nothing.
            doc.pop("slo", None)
            doc["lc"] = self._describe()
        doc["actions"] = dict(self.action_counts)
        doc["failures"] = self.failures
        doc["recent"] = [r.to_json() for r in list(self.history)[-10:]]
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
