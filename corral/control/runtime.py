"""The control loop: read the signals, take the pure step, apply the actions.

`ColocationRuntime` is the seam for the node agent: `run` is the loop as a coroutine (the
agent runs it as one of its root tasks), ``await start()`` / ``await stop()`` run it as a
task of its own; `status` is a JSON-able dict for ``/status``; `snapshot` feeds
`corral.control.metrics.ControlCollector`. ``await tick()`` is the loop's body, callable on
its own (the benchmark drives it from its own schedule). `set_cores` re-bounds BE when the
agent's placement changes the BE pool; ``await reapply()`` writes the whole BE state again
after another writer touched the BE box.

What it promises:

* **Nothing blocks the event loop.** Latency sources are asynchronous (the prober is a
  task of its own, Prometheus scrapes use an async client with the source's timeout, files
  are read in a worker thread). The BE box's memory readings and every actuator write go
  through ``execute`` (default `asyncio.to_thread`; the agent passes its one ordered
  effect executor): one call per tick applies the tick's whole action list in order.
  `status` and `snapshot` are synchronous and only read memory.
* **A lost signal is "no signal", never a breach.** A source that is slow, failed or had
  too few samples makes the pure step hold BE (see `corral.control.controller`). The
  runtime tracks each source's health (status, reason, consecutive and total failures,
  last latency and read time), logs ``control.signal_lost`` / ``control.signal_restored``
  once per transition, shows it in `status` and exports it in `snapshot`.
* **One failure policy.** Expected errors in a tick (`CorralError`, `OSError`,
  `TimeoutError`; sources translate their library's errors into these at their boundary)
  are counted, shown (``loop.last_error``, ``loop.consecutive_failures``) and retried next
  period, with the wait doubling per consecutive failure up to ``max_backoff_periods``
  periods. Anything else is a programming error: it is logged (``control.crashed``) and
  propagates, ending the loop (and the agent's task group) instead of carrying on.
* Every action is logged (``control.action``, with its reason), kept in a short history
  and handed to ``listener``; so are mode changes and signal transitions (``kind``
  ``"signal"``). The listener is called on the event loop and must not block (the agent's
  enqueues its event-log write). A refused write is logged (``control.action_failed``) and
  the next tick re-applies the whole BE state, so a transient refusal cannot leave the
  kernel and the controller apart. Writes of a tick, a `reapply` and a `thaw` never
  interleave. When the loop stops, every workload it froze is thawed: a restarted
  controller starts from a fresh state and would never thaw it.
* **dCat** (``dcat``, a `corral.control.dcatrun.DcatRunner`; off without one). Before the
  first period the runtime checks, through ``execute``, that the actuator can write
  per-workload ways (its ``describe()``), that the ways ladder is on and that the sampler
  has a signal; when one is missing `status` shows ``dcat: {running: false, why}`` and
  ``control.dcat_unavailable`` is logged once with the reason. When it runs, each
  sub-controller period samples every BE workload (through ``execute``: perf counters are
  syscalls), steps dCat on BE's ways of the ladder (``Levels.ways``) and appends its
  `SetWorkloadWays` to the same batch as the tick's other actions; `status` and the
  metrics show each workload's category and reason, and the ways and mask only once
  written. A failed sample skips dCat for that period (``control.dcat_sample_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from corral.control.actions import Action, Evict, Freeze, SetWorkloadWays, Thaw, describe
from corral.control.actuator import ActuatorDescription, Capability
from corral.control.controller import Controller, ControllerState
from corral.control.crashloop import CrashLoopState, crash_loop_refused, crash_loop_step
from corral.control.crashloop import status as crash_loop_status
from corral.control.dcatrun import DcatAvailability, DcatRunner, DcatSnapshot, check
from corral.control.evict import BeWorkload
from corral.control.knobs import Knob
from corral.control.signals import Observation, Signal, SignalStatus
from corral.errors import CorralError, InputError
from corral.topology.cpuset import CpuSet

logger = logging.getLogger(__name__)

T = TypeVar("T")

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (CorralError, OSError, TimeoutError)
"""Errors a tick may meet in normal operation (a refused file, a vanished cgroup, a
timeout): counted and retried. Everything else ends the loop."""


class SignalSource(Protocol):
    """Where LC latency and load come from (prober, scraper, file)."""

    async def read(self, now: float) -> Observation:
        """This period's observation, with its signal status; a slow or failed source
        says so in ``Observation.signals`` rather than raising."""
        ...


class Actuator(Protocol):
    """Applies one action to the kernel (called through the runtime's ``execute``)."""

    def apply(self, action: Action) -> None:
        """Apply ``action``; raise `CorralError` when the kernel refuses."""
        ...


@runtime_checkable
class DescribedActuator(Protocol):
    """An actuator that says what it can do on this host (`ControlActuator.describe`)."""

    def describe(self) -> ActuatorDescription:
        """Its capabilities here, each "cannot" with its reason."""
        ...


class Executor(Protocol):
    """Runs a blocking function off the event loop and awaits its result (or error)."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]:
        """``fn()``'s result, computed somewhere that is not the event loop."""
        ...


class Service(Protocol):
    """Something that runs beside the loop (a prober, a scraper's client): started and
    stopped with it."""

    async def start(self) -> None:
        """Start."""
        ...

    async def stop(self) -> None:
        """Stop and release everything."""
        ...


class OomSignals(Protocol):
    """Each BE workload's cumulative OOM-kill count (for the crash-loop rule); blocking,
    called through ``execute``."""

    def be_oom_kills(self, workloads: Sequence[str]) -> dict[str, int | None]:
        """workload -> OOM kills so far in its cgroup (None: unreadable)."""
        ...


class MemorySignals(Protocol):
    """The BE box's memory readings (for senpai); blocking, called through ``execute``."""

    def be_memory_bytes(self) -> int | None:
        """Current use in bytes."""
        ...

    def be_psi_some_us(self) -> int | None:
        """Cumulative memory PSI ``some`` total in microseconds."""
        ...


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One applied (or refused) action, a mode change (``kind`` ``"mode"``) or a signal
    lost or restored (``kind`` ``"signal"``).

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


@dataclass(frozen=True, slots=True)
class SignalHealth:
    """How one latency source has been doing (for /status and metrics)."""

    source: str
    status: SignalStatus
    reason: str
    since: float
    """When the source entered ``status``."""
    consecutive_failures: int = 0
    """Reads in a row that gave no signal (0 while it is ok)."""
    failures: int = 0
    """Reads that gave no signal since the runtime started."""
    last_error: str | None = None
    """The last reason it gave no signal (kept after it recovers)."""
    latency_ms: float | None = None
    """The last latency it measured."""
    read_s: float | None = None
    """How long its last read took."""

    @property
    def ok(self) -> bool:
        """True when the last read gave a signal."""
        return self.status is SignalStatus.OK

    def to_json(self) -> dict[str, Any]:
        """The JSON form shown in /status."""
        return {
            "source": self.source,
            "status": str(self.status),
            "reason": self.reason,
            "since": self.since,
            "consecutive_failures": self.consecutive_failures,
            "failures": self.failures,
            "last_error": self.last_error,
            "latency_ms": self.latency_ms,
            "read_ms": None if self.read_s is None else round(self.read_s * 1000.0, 3),
        }

    def after(self, signal: Signal, now: float) -> SignalHealth:
        """This health after one more read that gave ``signal``."""
        since = self.since if signal.status is self.status else now
        latency = signal.latency_ms if signal.latency_ms is not None else self.latency_ms
        if signal.ok:
            return replace(
                self,
                status=signal.status,
                reason="",
                since=since,
                consecutive_failures=0,
                latency_ms=latency,
                read_s=signal.read_s,
            )
        return replace(
            self,
            status=signal.status,
            reason=signal.reason,
            since=since,
            consecutive_failures=self.consecutive_failures + 1,
            failures=self.failures + 1,
            last_error=signal.describe(),
            latency_ms=latency,
            read_s=signal.read_s,
        )


class DryRunActuator:
    """Writes nothing: keeps the last actions it was asked to apply (a dry-run agent)."""

    def __init__(self, keep: int = 100) -> None:
        self.applied: deque[Action] = deque(maxlen=keep)

    def apply(self, action: Action) -> None:
        """Record ``action``."""
        self.applied.append(action)

    def describe(self) -> ActuatorDescription:
        """Nothing is written, so nothing can be relied on as done."""
        why = "dry run: the agent writes nothing"
        return ActuatorDescription("dry-run", cannot=dict.fromkeys(Capability, why))


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
    signals: tuple[SignalHealth, ...] = ()
    tick_failures: int = 0
    consecutive_tick_failures: int = 0
    dcat: DcatSnapshot = field(default_factory=lambda: DcatSnapshot(False, False))
    crash_loop_held: int = 0


class ColocationRuntime:
    """Runs a `Controller` against real signals and an actuator (see module docstring).

    Called on the event loop, so they must be cheap and must not block: ``workloads``
    (the BE workloads that may be frozen, read each tick), ``listener`` (each record),
    ``clock``. Called through ``execute``, off the loop: ``actuator.apply`` and the
    ``memory`` readings. ``max_backoff_periods`` caps the wait after failed ticks;
    ``dcat`` runs the per-workload cache manager (see the module docstring)."""

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
        execute: Executor = asyncio.to_thread,
        history: int = 100,
        services: Sequence[Service] = (),
        listener: Callable[[ActionRecord], None] | None = None,
        describe: Callable[[], list[dict[str, Any]]] | None = None,
        max_backoff_periods: int = 4,
        dcat: DcatRunner | None = None,
        oom: OomSignals | None = None,
    ) -> None:
        if max_backoff_periods < 1:
            raise InputError(
                "max_backoff_periods", f"{max_backoff_periods} is below 1", "e.g. 4 periods"
            )
        self.controller = controller
        self.state: ControllerState = controller.initial()
        self._source = source
        self._actuator = actuator
        self._memory = memory
        self._workloads = workloads
        self._clock = clock
        self._sleep = sleep
        self._execute = execute
        self._task: asyncio.Task[None] | None = None
        self._services = tuple(services)
        self._listener = listener
        self._describe = describe
        self._writes = asyncio.Lock()
        self.max_backoff_periods = max_backoff_periods
        self.history: deque[ActionRecord] = deque(maxlen=history)
        self.action_counts: Counter[str] = Counter()
        self.failures = 0
        """Actions the kernel refused."""
        self.ticks = 0
        self.tick_failures = 0
        self.consecutive_tick_failures = 0
        self.last_error: str | None = None
        self.signals: dict[str, SignalHealth] = {}
        self.last_observation = Observation()
        self.dcat = dcat
        self._oom = oom
        self.crash_loop = CrashLoopState()

    @property
    def period_s(self) -> float:
        """How often the loop ticks: the shorter of the top and sub-controller periods."""
        s = self.controller.settings
        return min(s.top.period_s, s.sub_period_s)

    def next_delay_s(self) -> float:
        """Seconds until the next tick: one period, doubled per consecutive failed tick,
        at most ``max_backoff_periods`` periods."""
        failures = self.consecutive_tick_failures
        factor = 1 if failures == 0 else min(2 ** (failures - 1), self.max_backoff_periods)
        return self.period_s * factor

    async def observe(self, now: float) -> Observation:
        """This tick's signals: the latency source plus the BE box's memory readings (read
        through ``execute``)."""
        obs = await self._source.read(now)
        memory = self._memory
        if memory is not None:
            psi, usage = await self._execute(
                lambda: (memory.be_psi_some_us(), memory.be_memory_bytes())
            )
            obs = replace(obs, psi_some_us=psi, be_memory_bytes=usage)
        return obs

    async def tick(self) -> tuple[Action, ...]:
        """One period: observe, step, apply. Returns the actions taken.

        Raises what reading the memory signals or applying raised other than a refusal
        (which is recorded); `run` decides what to do with it."""
        now = self._clock()
        if self.dcat is not None and self.dcat.availability is None:
            await self.check_dcat()
        obs = await self.observe(now)
        self.last_observation = obs
        self._track(obs, now)
        workloads = tuple(self._workloads()) if self._workloads is not None else ()
        workloads, loop_actions = await self._crash_loop_step(workloads, now)
        previous_mode = self.state.top.mode
        state, actions = self.controller.step(self.state, obs, now, workloads=workloads)
        actions = (*loop_actions, *actions)
        # Commit the state before awaiting the writes: `set_cores` or `thaw` may change it
        # meanwhile, and must not be overwritten by this tick's older copy.
        self.state = state
        self.ticks += 1
        if state.top.mode is not previous_mode:
            mode = str(state.top.mode)
            logger.info("control.mode", extra={"mode": mode, "reason": state.top.reason})
            self._notify(ActionRecord(now, "mode", f"mode {mode}", state.top.reason))
        actions = (*actions, *await self._dcat_step(workloads, now))
        refused = await self._apply(actions, now)
        if _needs_rerender(refused):
            # After a refusal, re-render every knob next tick (applied=False).
            self.state = replace(self.state, applied=False)
        self._crash_loop_refused(loop_actions, refused, now)
        return actions

    async def _crash_loop_step(
        self, workloads: tuple[BeWorkload, ...], now: float
    ) -> tuple[tuple[BeWorkload, ...], tuple[Action, ...]]:
        """The crash-loop rule's holds and releases this tick (OOM-kill counts read
        through ``execute``) and the workloads left for the controller: a held workload is
        neither the controller's to freeze nor to thaw (`corral.control.crashloop`)."""
        settings = self.controller.settings.crash_loop
        oom = self._oom
        if oom is None or not settings.enabled or not workloads:
            return workloads, ()
        ids = [w.id for w in workloads]
        try:
            kills = await self._execute(lambda: oom.be_oom_kills(ids))
        except EXPECTED_ERRORS as err:
            logger.warning("control.oom_kills_unreadable", extra={"error": str(err)})
            kills = dict.fromkeys(ids)
        self.crash_loop, decisions = crash_loop_step(settings, self.crash_loop, kills, now)
        held = set(self.crash_loop.held())
        evict = self.state.evict
        if any(wid in held for wid, _ in evict.frozen):
            frozen = tuple((w, t) for w, t in evict.frozen if w not in held)
            self.state = replace(self.state, evict=replace(evict, frozen=frozen))
        actions = tuple(
            Freeze(d.workload, d.reason) if d.hold else Thaw(d.workload, d.reason)
            for d in decisions
        )
        return tuple(w for w in workloads if w.id not in held), actions

    def _crash_loop_refused(
        self, loop_actions: Sequence[Action], refused: Sequence[Action], now: float
    ) -> None:
        """A refused hold is no hold (status must not claim it); a refused release is
        tried again next tick."""
        for action in loop_actions:
            if action in refused and isinstance(action, Freeze | Thaw):
                self.crash_loop = crash_loop_refused(
                    self.crash_loop, action.workload, hold=isinstance(action, Freeze), now=now
                )

    async def check_dcat(self) -> DcatAvailability | None:
        """Check once whether dCat can run here (through ``execute``: ``describe()`` reads
        resctrl's ``info/``, the sampler's probe opens counters); log
        ``control.dcat_unavailable`` with the reason when it cannot. None without dCat."""
        dcat = self.dcat
        if dcat is None:
            return None
        actuator = self._actuator
        sampler = dcat.sampler
        cache = self.controller.settings.cache

        def probe() -> DcatAvailability:
            description = actuator.describe() if isinstance(actuator, DescribedActuator) else None
            return check(description=description, cache=cache, sampler=sampler.probe())

        try:
            availability = await self._execute(probe)
        except EXPECTED_ERRORS as err:
            availability = DcatAvailability(False, f"the check failed: {err}")
        dcat.set_availability(availability, cache)
        if availability.running:
            logger.info(
                "control.dcat_running",
                extra={"signal": availability.signal, "note": availability.why},
            )
        else:
            logger.warning("control.dcat_unavailable", extra={"why": availability.why})
        return availability

    async def _dcat_step(self, workloads: Sequence[BeWorkload], now: float) -> tuple[Action, ...]:
        """dCat's action for this tick, if it runs and a sub-controller period began: the
        BE workloads sampled through ``execute``, BE's ways on the ladder as the budget."""
        dcat = self.dcat
        if dcat is None or not dcat.running or self.state.last_sub != now:
            return ()
        ids = [w.id for w in workloads]
        sampler = dcat.sampler
        try:
            samples = await self._execute(lambda: sampler.sample(ids))
        except EXPECTED_ERRORS as err:
            dcat.last_error = f"sampling: {type(err).__name__}: {err}"
            logger.warning("control.dcat_sample_failed", extra={"error": dcat.last_error})
            return ()
        action = dcat.step(budget=self.state.levels.ways, samples=samples)
        return () if action is None else (action,)

    def _track(self, obs: Observation, now: float) -> None:
        """Update each source's health; log and record each transition once."""
        for signal in obs.signals:
            old = self.signals.get(signal.source)
            base = old or SignalHealth(signal.source, SignalStatus.OK, "", now)
            new = base.after(signal, now)
            self.signals[signal.source] = new
            if new.status is base.status and old is not None:
                continue
            if not new.ok:
                logger.warning(
                    "control.signal_lost",
                    extra={"source": new.source, "status": str(new.status), "reason": new.reason},
                )
                what = f"signal {new.source} {new.status}"
                self._record(ActionRecord(now, "signal", what, new.reason))
            elif old is not None:
                lost_s = now - base.since
                logger.info(
                    "control.signal_restored",
                    extra={"source": new.source, "after_s": round(lost_s, 3)},
                )
                why = f"after {lost_s:.1f} s {base.status}: {base.reason}"
                self._record(ActionRecord(now, "signal", f"signal {new.source} ok", why))

    async def _apply(
        self, actions: Sequence[Action], now: float, *, record: bool = True
    ) -> tuple[Action, ...]:
        """Apply ``actions`` in order in one ``execute`` call; the ones refused (see
        `_needs_rerender`). Unrecorded actions (a repeated write of an unchanged state) are
        only logged and reported when refused."""
        if not actions:
            return ()
        batch = tuple(actions)

        def apply_all() -> list[str | None]:
            errors: list[str | None] = []
            for action in batch:
                try:
                    self._actuator.apply(action)
                except (CorralError, OSError) as err:
                    errors.append(str(err) or type(err).__name__)
                else:
                    errors.append(None)
            return errors

        async with self._writes:
            running = asyncio.ensure_future(self._execute(apply_all))
            try:
                errors = await asyncio.shield(running)
            except asyncio.CancelledError:
                # Stopping mid-batch: let the batch finish before anything else writes (the
                # thaw on the way out), then stop.
                await asyncio.wait([running])
                raise
        for action, error in zip(batch, errors, strict=True):  # a short list is a bug: raise
            if isinstance(action, SetWorkloadWays) and self.dcat is not None:
                self.dcat.confirm(action, error)
            kind = type(action).__name__
            what = describe(action)
            workload = action.workload if isinstance(action, Freeze | Thaw | Evict) else None
            if error is not None:
                self.failures += 1
                self._record(ActionRecord(now, kind, what, action.reason, error, workload))
                logger.warning(
                    "control.action_failed",
                    extra={"action": what, "reason": action.reason, "error": error},
                )
                continue
            if not record:
                logger.debug("control.reapplied", extra={"action": what})
                continue
            self.action_counts[kind] += 1
            self._record(ActionRecord(now, kind, what, action.reason, workload=workload))
            logger.info("control.action", extra={"action": what, "reason": action.reason})
        return tuple(a for a, e in zip(batch, errors, strict=True) if e is not None)

    def _record(self, record: ActionRecord) -> None:
        self.history.append(record)
        self._notify(record)

    def _notify(self, record: ActionRecord) -> None:
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
        spec = self.controller.specs()[Knob.CORES]
        state = self.state
        pending = state.pending
        if pending is not None and pending.knob is Knob.CORES:
            pending = None
        levels = state.levels.with_level(Knob.CORES, spec.clamp(state.levels.cores))
        self.state = replace(state, levels=levels, pending=pending)
        return True

    async def reapply(self, reason: str, *, record: bool = False) -> tuple[Action, ...]:
        """Write the current BE CPUs, weight, quota and cache state again (through
        ``execute``, never interleaved with a tick's writes).

        With ``record`` the writes count as actions (the BE state changed, e.g. the pool
        did); without, only refusals are reported. A refusal makes the next tick re-apply.
        """
        actions = self.controller.render(self.state.levels, reason)
        ways = self.dcat.current(reason) if self.dcat is not None and self.dcat.running else None
        if ways is not None:
            actions = (*actions, ways)
        if _needs_rerender(await self._apply(actions, self._clock(), record=record)):
            self.state = replace(self.state, applied=False)
        return actions

    async def thaw(self, workloads: Sequence[str], reason: str) -> None:
        """Thaw ``workloads`` (recorded as actions, through ``execute``) and forget that
        they were frozen."""
        if not workloads:
            return
        await self._apply([Thaw(wid, reason) for wid in workloads], self._clock())
        gone = set(workloads)
        frozen = tuple((w, t) for w, t in self.state.evict.frozen if w not in gone)
        self.state = replace(self.state, evict=replace(self.state.evict, frozen=frozen))

    async def thaw_all(self, reason: str) -> None:
        """Thaw every workload the controller or the crash-loop rule froze and forget
        them."""
        held = self.crash_loop.held()
        self.crash_loop = CrashLoopState()
        await self.thaw([*(wid for wid, _ in self.state.evict.frozen), *held], reason)

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
        """Start the services (probers, scrape clients), tick until cancelled - every
        `period_s`, backing off after failed ticks (see `next_delay_s`) - then thaw what
        the controller froze and stop the services. BE cores, weight and quota are left as
        the last action set them. A programming error ends it (see the module docstring)."""
        started: list[Service] = []
        try:
            if self.dcat is not None and self.dcat.availability is None:
                await self.check_dcat()
            for service in self._services:
                await service.start()
                started.append(service)
            while True:
                await self._guarded_tick()
                await self._sleep(self.next_delay_s())
        finally:
            try:
                await self.thaw_all("the controller is stopping")
            finally:
                try:
                    if self.dcat is not None:
                        await self._execute(self.dcat.sampler.close)
                finally:
                    for service in reversed(started):
                        await service.stop()

    async def _guarded_tick(self) -> None:
        """One tick under the failure policy (see the module docstring)."""
        try:
            await self.tick()
        except EXPECTED_ERRORS as err:
            self.tick_failures += 1
            self.consecutive_tick_failures += 1
            self.last_error = f"{type(err).__name__}: {err}"
            logger.warning(
                "control.tick_failed",
                extra={
                    "error": self.last_error,
                    "consecutive": self.consecutive_tick_failures,
                    "retry_in_s": self.next_delay_s(),
                },
            )
            return
        except Exception:
            logger.exception("control.crashed")
            raise
        if self.consecutive_tick_failures:
            logger.info("control.tick_recovered", extra={"after": self.consecutive_tick_failures})
        self.consecutive_tick_failures = 0

    def status(self) -> dict[str, Any]:
        """The controller's state, the last observation, each source's signal health, the
        loop's failures and recent actions (for /status); cheap, never blocks."""
        doc = self.controller.status(self.state)
        obs = self.last_observation
        doc["observation"] = {
            "latency_ms": obs.latency_ms,
            "load_rps": obs.load_rps,
            "noisy": obs.noisy,
            "be_memory_bytes": obs.be_memory_bytes,
            "signal": str(obs.status),
            "no_signal": obs.no_signal_reason() or None,
        }
        doc["signals"] = [h.to_json() for h in self.signals.values()]
        doc["loop"] = {
            "ticks": self.ticks,
            "failures": self.tick_failures,
            "consecutive_failures": self.consecutive_tick_failures,
            "last_error": self.last_error,
            "next_tick_in_s": self.next_delay_s(),
        }
        if self._describe is not None:
            # Each LC workload has its own SLO; the controller's default SLO means nothing.
            doc.pop("slo", None)
            doc["lc"] = self._describe()
        doc["dcat"] = (
            {"enabled": False, "running": False, "why": "off (dcat.enabled: false)"}
            if self.dcat is None
            else self.dcat.status()
        )
        doc["crash_loop"] = {
            "enabled": self._oom is not None and self.controller.settings.crash_loop.enabled,
            "held": crash_loop_status(self.crash_loop, self._clock()),
        }
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
            signals=tuple(self.signals.values()),
            tick_failures=self.tick_failures,
            consecutive_tick_failures=self.consecutive_tick_failures,
            dcat=DcatSnapshot(False, False) if self.dcat is None else self.dcat.snapshot(),
            crash_loop_held=len(self.crash_loop.held()),
        )


def _needs_rerender(refused: Sequence[Action]) -> bool:
    """Whether a refusal needs the whole BE state rendered again: any but dCat's
    `SetWorkloadWays`, which dCat retries itself (it compares with what was written)."""
    return any(not isinstance(a, SetWorkloadWays) for a in refused)
