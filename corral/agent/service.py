"""The agent's wiring: the event loop, the pure core and the one effect executor.

Root tasks (all cancelled when one dies): the decision loop, the periodic rebalance (with
jitter), the periodic reconcile (drift check and repair), usage sampling and, when the
config has a control section, the colocation controller (`AgentControl`).

* Decisions are `corral.agent.core.step`: pure, computed in a worker thread, so the loop
  keeps answering while the solver runs.
* Every write (SQLite commits, the enforcer's cgroup writes, the controller's actuator)
  goes through one `EffectExecutor`, in order; nothing blocking runs on the loop, and the
  store is only ever used from that thread.
* Every change of the workload set goes through the coalescing queue, so a burst becomes
  one decision, and the decision loop is the only writer of the assignment. A PUT either
  commits the workload as pending and returns (acknowledged, placed by the next decision)
  or waits for the decision and is refused alone, with nothing stored, when it cannot be
  placed.
* One failure policy (`corral.agent.faults`): expected failures are retried with backoff
  and shown in /status and the metrics; anything else ends the agent.
* One owner per cgroup file: with a controller, the enforcer leaves the BE box's CPU and
  memory-pressure knobs and the BE workloads' cpusets to it (`corral.control.ownership`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.agent.admission import OverloadedError
from corral.agent.config import AgentSettings
from corral.agent.core import (
    Answer,
    AnswerKind,
    CoreState,
    Request,
    StepResult,
    settle,
    step,
)
from corral.agent.decide import Decision, decide
from corral.agent.effects import EffectExecutor
from corral.agent.enforcer import ApplyReport, Drift, Enforcer
from corral.agent.events import CoalescingQueue, Event, EventKind
from corral.agent.faults import Faults, Task, is_expected
from corral.agent.ledger import EnforcementLedger
from corral.agent.metrics import Gauges, WorkloadSeries
from corral.agent.observer import NullObserver, Observer
from corral.agent.predictions import AgentPredictor
from corral.agent.reload import LIVE_FIELDS, ReloadLog
from corral.agent.reserved import RESERVED_ID, reserved_set, reserved_workload, without_reserved
from corral.agent.sampler import UsageSampler, coverage_counts, read_usages
from corral.agent.state import (
    DecisionRecord,
    LoggedEvent,
    StateStore,
    Status,
    StoredWorkload,
)
from corral.agent.throttling import ThrottleReader, Throttling, read_throttling
from corral.agent.views import PutResult, WorkloadView
from corral.control.ownership import be_pool, be_pool_cores
from corral.control.runtime import ActionRecord, ColocationRuntime
from corral.enforce.usage import UsageReader, UsageResult
from corral.errors import CorralError, InputError, PlacementError
from corral.placement.assignment import Assignment, Placement
from corral.placement.pools import immovable_cpus
from corral.placement.workload import Policy, Qos, Workload
from corral.topology.model import Topology

log = logging.getLogger(__name__)

RECENT_EVENTS = 50
"""Events kept in memory for /status (the full log is in the store)."""


class ShuttingDownError(CorralError):
    """The agent stopped before it could decide on a request."""


@dataclass(frozen=True, slots=True)
class AgentControl:
    """The colocation controller as the agent runs it.

    Who owns what (the full rule is `corral.control.ownership`'s): the agent's placement
    bounds BE to its pool and the controller divides that pool; the controller alone
    writes the BE box's CPU and memory-pressure knobs and the cpusets of the BE workloads
    in it, and the enforcer's desired state leaves those files out. ``be_cgroup`` is the
    box the controller acts on; ``agent_box`` says it is the agent's own BE box (its BE
    workloads live there).
    """

    runtime: ColocationRuntime
    be_cgroup: str
    agent_box: bool
    actuator: Mapping[str, Any] | None = None
    """What the actuator can and cannot do on this host (None: a dry run writes nothing)."""


def topology_key(topology: Topology) -> str:
    """A fingerprint of the CPUs a placement depends on (online CPUs and their places)."""
    return ";".join(f"{c.id}:{c.core}:{c.socket}:{c.numa}:{c.l3}" for c in topology.cpus)


class AgentService:
    """The agent core. Use from one event loop: `start`, then `run` until cancelled, then
    `close`."""

    def __init__(
        self,
        *,
        settings: AgentSettings,
        topology: Topology,
        store: StateStore,
        enforcer: Enforcer,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        effects: EffectExecutor | None = None,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.store = store
        self.enforcer = enforcer
        self.observer: Observer = observer or NullObserver()
        self.effects = effects or EffectExecutor()
        self.faults = Faults()
        self._clock = clock
        self._rng = rng or random.Random()
        self._queue = CoalescingQueue(
            window_s=settings.coalesce_window_s,
            max_s=settings.coalesce_max_s,
            burst_gap_s=settings.coalesce_burst_gap_s,
        )
        self._core = CoreState()
        self._workloads: dict[str, StoredWorkload] = {}  # the core's, plus newer pending
        self._revision = 0
        # Requests queued and not decided yet: id -> (revision, exclusive CPUs asked for).
        self._queued: dict[str, tuple[int, int]] = {}
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._next_waiter = 0
        self._last_decision: DecisionRecord | None = None
        self._decisions = 0
        self._fallbacks = 0
        self._drift: list[Drift] = []
        self._last_reconcile: dict[str, Any] = {}
        self._ledger = EnforcementLedger(dry_run=enforcer.dry_run)
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._be_members: tuple[str, ...] = ()
        self._ready = False
        self._listeners: list[Callable[[Placement], None]] = []
        self._pending_commits: list[tuple[StoredWorkload, LoggedEvent, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._sampler = UsageSampler(settings.downsample_s)
        self._usage_reader = UsageReader.at(settings.cgroup_root)
        self._throttle_reader = ThrottleReader(self._usage_reader.layout)
        self._throttling: dict[str, Throttling] = {}
        self.reloads = ReloadLog()
        self._retuned = asyncio.Event()  # set (and replaced) when a reload changes periods
        self.reserved = reserved_set(topology, settings.reserved_cpus)
        self._reserved = reserved_workload(self.reserved)
        self._views: list[dict[str, Any]] | None = None  # GET /workloads, until a change
        self._started_s = clock()
        self.control: AgentControl | None = None
        self.predictor = AgentPredictor.open(settings.predictor, settings.state_path)

    # --- the store, through the executor ------------------------------------------------
    async def _store(self, fn: Callable[[], Any]) -> Any:
        """Run one store call on the effect executor (the store's only thread)."""
        return await self.effects.run(fn)

    def _log_soon(self, events: Sequence[LoggedEvent], *, decision_id: int | None = None) -> None:
        """Remember ``events`` for /status and queue their write to the log (ordered with
        every other write; a failed write is logged and counted by the executor)."""
        now = self._clock()
        for event in events:
            self._remember(now, event, decision_id)
        if decision_id is None and events:
            batch = list(events)
            self.effects.submit(
                functools.partial(self.store.log_events, now, batch), what="event log"
            )

    def _remember(self, at_s: float, event: LoggedEvent, decision_id: int | None) -> None:
        self._recent.appendleft(
            {
                "at_s": at_s,
                "kind": event.kind,
                "workload_id": event.workload_id,
                "decision_id": decision_id,
                "detail": event.detail,
            }
        )

    # --- life cycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Reload the stored state, re-place if the topology changed (or anything was left
        pending by a crash), and re-apply the assignment to the kernel."""
        store = self.store
        workloads = await self._store(store.load_workloads)
        self._revision = await self._store(store.max_revision)
        self._decisions = await self._store(store.decision_count)
        self._last_decision = await self._store(store.last_decision)
        previous = await self._store(store.load_assignments)
        for row in reversed(await self._store(lambda: store.recent_events(RECENT_EVENTS))):
            self._recent.appendleft(row)
        key = topology_key(self.topology)
        stored_key = await self._store(lambda: store.meta("topology"))
        changed = stored_key is not None and stored_key != key
        if changed:
            log.warning(
                "agent.topology_changed",
                extra={"online": str(self.topology.all_cpus), "workloads": len(workloads)},
            )
            online = f"online {self.topology.all_cpus}"
            self._log_soon([LoggedEvent("topology-changed", None, online)])
        kept = {
            wid: a
            for wid, a in previous.items()
            if wid in workloads
            and workloads[wid].status is not Status.PENDING  # spec may have changed
            and a.cpuset.issubset(self.topology.all_cpus)
        }
        self._core = CoreState(
            workloads=workloads,
            placement=Placement(assignments=kept, pools={}),
            decided={wid: workloads[wid].workload for wid in kept},
        )
        self._workloads = dict(workloads)
        await self._decide([], trigger="restart", rebalance=False, topology_changed=changed)
        self._ready = True
        log.info(
            "agent.started",
            extra={
                "workloads": len(self._workloads),
                "topology": self.topology.name,
                "enforcer": self.enforcer.describe(),
            },
        )

    async def run(self) -> None:
        """Run the root tasks until cancelled (or until one of them fails)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._decision_loop(), name="decisions")
                group.create_task(
                    self._every(
                        lambda: self.settings.rebalance_period_s, self._periodic_rebalance, True
                    ),
                    name="rebalance",
                )
                group.create_task(
                    self._every(
                        lambda: self.settings.reconcile_period_s, self._periodic_reconcile, False
                    ),
                    name="reconcile",
                )
                group.create_task(
                    self._guarded(Task.SAMPLER, lambda: self.settings.sample_period_s, self.sample),
                    name="sampler",
                )
                if self.control is not None:
                    group.create_task(self.control.runtime.run(), name="control")
        except BaseExceptionGroup as group:
            for error in group.exceptions:
                if not isinstance(error, asyncio.CancelledError):
                    log.critical(
                        "agent.crashed",
                        extra={"error": f"{type(error).__name__}: {error}"},
                        exc_info=error,
                    )
            raise

    def close(self) -> None:
        """Refuse every queued request that waits, finish the queued writes and close the
        store."""
        for event in self._queue.drain():
            if event.reply is not None and not event.reply.done():
                event.reply.set_exception(ShuttingDownError("the agent is shutting down; retry"))
        self.effects.close()
        self.store.close()

    def _unqueue(
        self, workload_id: str, revision: int, restore: tuple[int, int] | None = None
    ) -> None:
        """Forget a queued request once decided (unless a newer one for the id is queued)."""
        if self._queued.get(workload_id, (None, 0))[0] == revision:
            if restore is None:
                del self._queued[workload_id]
            else:
                self._queued[workload_id] = restore

    async def _pause(self, period: Callable[[], float], factor: float = 1.0) -> None:
        """Sleep ``period() * factor`` seconds from now; a reload that changes the period
        (`apply_settings`) re-times the wait from its start with the new value."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            remaining = began + period() * factor - loop.time()
            if remaining <= 0:
                return
            retuned = self._retuned
            try:
                await asyncio.wait_for(retuned.wait(), remaining)
            except TimeoutError:
                return

    async def _every(
        self, period: Callable[[], float], job: Callable[[], Awaitable[Any]], jitter: bool
    ) -> None:
        while True:
            spread = self.settings.rebalance_jitter if jitter else 0.0
            await self._pause(period, 1 + self._rng.uniform(-spread, spread))
            await job()

    async def _guarded(
        self, task: Task, period: Callable[[], float], job: Callable[[], Awaitable[Any]]
    ) -> None:
        """Run ``job`` every ``period()`` s; an expected failure is recorded and retried after
        its backoff (never sooner than the period), anything else ends the agent."""
        while True:
            await self._pause(period)
            while True:
                try:
                    await job()
                except Exception as err:
                    if not is_expected(err):
                        raise
                    delay = self.faults.failed(task, err, self._clock())
                    await asyncio.sleep(max(delay, 0.0))
                    continue
                self.faults.ok(task, self._clock())
                break

    async def _periodic_rebalance(self) -> None:
        # titus-isolate rebalances when nothing else placed recently: an add or remove
        # within the last half period already re-decided (the optimiser may move then).
        last = self._last_decision
        recent = self.settings.rebalance_period_s / 2
        if last is not None and last.trigger != "rebalance" and self._clock() - last.at_s < recent:
            log.debug("agent.rebalance_skipped", extra={"last_decision": last.id})
            return
        self._queue.put(Event(EventKind.REBALANCE, detail="periodic"))

    async def _periodic_reconcile(self) -> None:
        # Through the queue: a reconcile never runs between a decision and its enforcement.
        self._queue.put(Event(EventKind.RECONCILE, detail="periodic"))

    # --- requests -------------------------------------------------------------------
    def _check_admission(self, workload: Workload) -> None:
        """Refuse at once an exclusive request that cannot fit even before deciding."""
        if workload.policy is not Policy.EXCLUSIVE:
            return
        others = [s.workload for wid, s in self._workloads.items() if wid != workload.id]
        if self._reserved is not None:
            others.append(self._reserved)
        capacity = len(self.topology.all_cpus - immovable_cpus([*others, workload]))
        held = sum(
            s.workload.whole_cpus
            for wid, s in self._workloads.items()
            if wid != workload.id
            and s.workload.policy is Policy.EXCLUSIVE
            and s.status is not Status.REFUSED
            and wid not in self._queued
        )
        held += sum(n for wid, (_, n) in self._queued.items() if wid != workload.id)
        free = capacity - held
        if workload.whole_cpus > free:
            raise PlacementError(
                f"{workload.id}: asks for {workload.whole_cpus} exclusive CPUs but only "
                f"{max(free, 0)} of {capacity} are not held by other exclusive workloads",
                workload_id=workload.id,
            )

    async def _commit_pending(self, stored: StoredWorkload, event: LoggedEvent) -> None:
        """Commit one pending workload, grouped with every other PUT that arrives while a
        commit is in progress (one transaction, one fsync for all of them)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_commits.append((stored, event, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._group_commit(), name="group-commit")
        await done

    async def _group_commit(self) -> None:
        while self._pending_commits:
            batch, self._pending_commits = self._pending_commits, []
            items = [(stored, event) for stored, event, _ in batch]
            try:
                await self._store(functools.partial(self.store.put_pending_many, items))
            except Exception as err:  # every caller of the batch gets the error
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(err)
                continue
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _check_queue(self) -> None:
        """Refuse a write at once when ``max_queued_requests`` are already waiting."""
        waiting = len(self._queue) + len(self._waiters) + self.effects.depth
        limit = self.settings.max_queued_requests
        if waiting >= limit:
            last = self._last_decision
            took_s = 0.0 if last is None else last.duration_ms / 1000
            raise OverloadedError(
                f"{waiting} workload writes are waiting (limit {limit})",
                retry_after_s=self.settings.coalesce_max_s + took_s,
            )

    def _waiter(self) -> tuple[int, asyncio.Future[Any]]:
        self._next_waiter += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[self._next_waiter] = future
        return self._next_waiter, future

    async def _wait(self, token: int, future: asyncio.Future[Any]) -> Any:
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._waiters.pop(token, None)

    async def put(self, workload: Workload, *, wait: bool) -> PutResult:
        """Create or update a workload. Without ``wait``: committed as pending, placed by the
        next decision. With ``wait``: returns once placed and committed, or raises
        `PlacementError` with nothing stored; `OverloadedError` when the queue is full."""
        if workload.id == RESERVED_ID:
            raise InputError(
                "id", f"{RESERVED_ID!r} names the agent's reserved CPUs", "choose another id"
            )
        self._check_queue()
        self._check_admission(workload)
        before = self._workloads.get(workload.id)
        created = before is None
        self._revision += 1
        revision = self._revision
        kind = EventKind.ADD if created else EventKind.UPDATE
        exclusive = workload.whole_cpus if workload.policy is Policy.EXCLUSIVE else 0
        earlier = self._queued.get(workload.id)
        self._queued[workload.id] = (revision, exclusive)
        if not wait:
            now = self._clock()
            stored = StoredWorkload(
                workload,
                Status.PENDING,
                "",
                revision,
                now if before is None else before.created_s,
                now,
            )
            event = LoggedEvent("queued", workload.id, kind)
            try:
                await self._commit_pending(stored, event)
            except BaseException:
                self._unqueue(workload.id, revision, earlier)
                raise
            self._remember(now, event, None)
            self._workloads[workload.id] = stored
            self._views = None
            self._queue.put(
                Event(
                    kind, workload.id, workload, revision, stored=True, created_s=stored.created_s
                )
            )
            return PutResult(created, True, WorkloadView(stored, None, None))
        token, reply = self._waiter()
        self._queue.put(Event(kind, workload.id, workload, revision, reply=reply, waiter=token))
        view: WorkloadView = await self._wait(token, reply)
        return PutResult(created, False, view)

    async def delete(self, workload_id: str) -> bool:
        """Remove a workload; False if it is unknown. Returns once the removal is committed."""
        if workload_id not in self._workloads and workload_id not in self._queued:
            return False
        self._check_queue()
        self._revision += 1
        self._queued[workload_id] = (self._revision, 0)
        token, reply = self._waiter()
        self._queue.put(
            Event(EventKind.REMOVE, workload_id, None, self._revision, reply=reply, waiter=token)
        )
        found: bool = await self._wait(token, reply)
        return found

    async def rebalance(self) -> DecisionRecord | None:
        """Rebalance now; returns the decision made."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(Event(EventKind.REBALANCE, detail="on demand", reply=reply))
        record: DecisionRecord | None = await asyncio.shield(reply)
        return record

    async def reconcile(self) -> dict[str, Any]:
        """Check drift and repair now; returns the reconcile summary."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(Event(EventKind.RECONCILE, detail="on demand", reply=reply))
        summary: dict[str, Any] = await asyncio.shield(reply)
        return summary

    # --- reads ----------------------------------------------------------------------
    def view(self, workload_id: str) -> WorkloadView | None:
        """One workload, or None."""
        stored = self._workloads.get(workload_id)
        if stored is None:
            return None
        return WorkloadView(
            stored,
            self._core.placement.assignments.get(workload_id),
            self._sampler.latest.get(workload_id),
            self._ledger.of(workload_id, placed=stored.status is Status.PLACED),
        )

    def views(self) -> list[WorkloadView]:
        """Every workload, by id."""
        return [v for wid in sorted(self._workloads) if (v := self.view(wid)) is not None]

    def workloads_json(self) -> list[dict[str, Any]]:
        """GET /workloads: built once per change of the workloads, placement or usage (a
        read model, so a burst of reads costs one serialisation)."""
        if self._views is None:
            self._views = [v.to_json() for v in self.views()]
        return self._views

    @property
    def placement(self) -> Placement:
        """The current placement."""
        return self._core.placement

    def gauges(self) -> Gauges:
        """What the metrics gauges show now."""
        counts = Counter((s.workload.qos.value, s.status.value) for s in self._workloads.values())
        return Gauges(
            dict(counts),
            len(self._queue),
            len(self._drift),
            faults={str(f.task): f.count for f in self.faults.open()},
            effects_depth=self.effects.depth,
            usage={str(k): v for k, v in coverage_counts(self._sampler.coverage()).items()},
            per_workload=self.workload_series(),
            reload=self.reloads.series(),
        )

    def subscribe(self, listener: Callable[[Placement], None]) -> None:
        """Call ``listener`` on the loop after every committed decision and its
        enforcement (the Kubernetes integration republishes from it). It must not block:
        queue work, do not do it."""
        self._listeners.append(listener)

    def not_ready(self) -> list[str]:
        """Why the agent cannot take writes now (empty: ready): not started, the state
        store unusable, or the decisions failing."""
        reasons: list[str] = []
        if not self._ready:
            reasons.append("starting: the stored state is being restored and enforced")
        failure = self.store.failure
        if failure is not None:
            reasons.append(f"state: {failure}")
        for fault in self.faults.open():
            if fault.task in (Task.DECISIONS, Task.STORE):
                reasons.append(f"{fault.task}: {fault.error} ({fault.count} in a row)")
        return reasons

    def status(self) -> dict[str, Any]:
        """The /status document (from memory: never waits for the store)."""
        by_status = Counter(s.status.value for s in self._workloads.values())
        placement = self._core.placement
        return {
            "topology": {"name": self.topology.name, "describe": self.topology.describe()},
            "online": str(self.topology.all_cpus),
            "uptime_s": round(self._clock() - self._started_s, 3),
            "dry_run": self.enforcer.dry_run,
            "enforcer": self.enforcer.describe(),
            "pending_events": len(self._queue),
            "pending_effects": self.effects.depth,
            "workloads": {"total": len(self._workloads), **dict(by_status)},
            "decisions_total": self._decisions,
            "last_decision": None if self._last_decision is None else self._last_decision.to_json(),
            "solver": {
                "allocator": self.settings.allocator.value,
                "budget_ms": self.settings.budget_ms,
                "fallbacks": self._fallbacks,
            },
            "drift": {
                "outstanding": [_drift_json(d) for d in self._drift[:100]],
                "last_reconcile": self._last_reconcile,
            },
            "enforcement_errors": self._ledger.errors(),
            "faults": [f.to_json() for f in self.faults.open()],
            "event_log_write_failures": self.effects.submitted_failures,
            "pools": {name: str(cpus) for name, cpus in placement.pools.items()},
            "reserved_cpus": str(self.reserved),
            "control": None if self.control is None else self._control_status(self.control),
            "predictions": self.predictor.status(),
            "usage": self.usage_status(),
            "config": self.config_status(),
            "recent_events": list(self._recent)[:20],
        }

    # --- the colocation controller ------------------------------------------------------
    def _control_status(self, control: AgentControl) -> dict[str, Any]:
        doc = control.runtime.status()
        doc["be_cgroup"] = control.be_cgroup
        doc["actuator"] = control.actuator or {"kind": "dry-run", "can": {}, "cannot": {}}
        doc["be_pool"] = str(be_pool(self.topology, self._core.placement))
        return doc

    def be_box_workloads(self) -> list[str]:
        """Placed BE workloads that live in the agent's BE box (created by the agent)."""
        return sorted(
            wid
            for wid, s in self._workloads.items()
            if s.workload.qos is Qos.BE
            and s.workload.cgroup is None
            and s.workload.container_id is None
            and wid in self._core.placement.assignments
        )

    def control_event(self, record: ActionRecord) -> None:
        """Log one controller action (or mode change) with its reason; never blocks (the
        write is queued on the effect executor)."""
        if record.kind == "mode":
            kind = "control-mode"
        else:
            kind = "control-refused" if record.error else "control"
        detail = f"{record.what}: {record.reason}"
        if record.error:
            detail += f" (refused: {record.error})"
        self._log_soon([LoggedEvent(kind, record.workload, detail)])

    async def _rebound_control(self, placement: Placement) -> bool:
        """Re-bound the controller to the BE pool of ``placement``. When BE loses CPUs (or
        trades some), its new CPUs are written now, before the enforcer grants them to
        anyone; returns True when BE only gained CPUs, which are written after."""
        control = self.control
        if control is None:
            return False
        before = control.runtime.be_cpus
        if not control.runtime.set_cores(be_pool_cores(self.topology, placement)):
            return False
        after = control.runtime.be_cpus
        if before <= after and before != after:
            return True
        pool = be_pool(self.topology, placement)
        await control.runtime.reapply(f"placement changed the BE pool to {pool}", record=True)
        return False

    # --- the decision loop ----------------------------------------------------------
    async def _decision_loop(self) -> None:
        while True:
            batch = await self._queue.next_batch()
            try:
                await self._handle(batch)
            except Exception as err:
                if not is_expected(err):
                    raise
                # The committed state is as it was; the callers waiting on this batch get
                # the error, and the next batch is tried after the backoff.
                delay = self.faults.failed(Task.DECISIONS, err, self._clock())
                retry: list[Event] = []
                for event in batch:
                    if event.stored and event.reply is None:
                        retry.append(event)  # acknowledged: decided again after the backoff
                        continue
                    if event.workload_id is not None:
                        self._unqueue(event.workload_id, event.revision)
                    if event.reply is not None and not event.reply.done():
                        event.reply.set_exception(err)
                await asyncio.sleep(delay)
                for event in retry:
                    self._queue.put(event)
            else:
                self.faults.ok(Task.DECISIONS, self._clock())

    async def _handle(self, batch: Sequence[Event]) -> None:
        mutations = [
            e for e in batch if e.kind in (EventKind.ADD, EventKind.UPDATE, EventKind.REMOVE)
        ]
        rebalances = [e for e in batch if e.kind is EventKind.REBALANCE]
        reconciles = [e for e in batch if e.kind is EventKind.RECONCILE]
        if mutations or rebalances:
            kinds = sorted(
                {e.kind.value for e in mutations} | ({"rebalance"} if rebalances else set())
            )
            record = await self._decide(
                mutations, trigger="+".join(kinds), rebalance=bool(rebalances)
            )
            for event in rebalances:
                if event.reply is not None and not event.reply.done():
                    event.reply.set_result(record)
        if reconciles:
            try:
                summary = await self._reconcile()
            except Exception as err:
                if not is_expected(err):
                    raise
                self.faults.failed(Task.RECONCILE, err, self._clock())
                for event in reconciles:
                    if event.reply is not None and not event.reply.done():
                        event.reply.set_exception(err)
                return
            self.faults.ok(Task.RECONCILE, self._clock())
            for event in reconciles:
                if event.reply is not None and not event.reply.done():
                    event.reply.set_result(summary)

    def _requests(self, events: Sequence[Event]) -> list[Request]:
        out: list[Request] = []
        for event in events:
            if event.workload_id is None:
                raise CorralError(f"a {event.kind} event without a workload id")
            out.append(
                Request(
                    kind=event.kind,
                    workload_id=event.workload_id,
                    workload=event.workload,
                    revision=event.revision,
                    stored=event.stored,
                    waiter=event.waiter,
                    created_s=event.created_s,
                    detail=event.detail,
                )
            )
        return out

    async def _decide(
        self,
        events: Sequence[Event],
        *,
        trigger: str,
        rebalance: bool,
        topology_changed: bool = False,
    ) -> DecisionRecord:
        now = self._clock()
        requests = self._requests(events)
        core = self._core
        specs = [s.workload for s in core.workloads.values()] + [
            r.workload for r in requests if r.workload is not None
        ]
        predicted = await asyncio.to_thread(self.predictor.predicted, specs, now)

        reserved = [] if self._reserved is None else [self._reserved]

        def place(workloads: Sequence[Workload], previous: Mapping[str, Assignment]) -> Decision:
            decision = decide(
                self.topology,
                [*workloads, *reserved],
                previous,
                allocator=self.settings.allocator,
                budget_ms=self.settings.budget_ms,
                rebalance=rebalance,
                predicted=predicted,
            )
            return without_reserved(decision) if reserved else decision

        result: StepResult = await asyncio.to_thread(
            functools.partial(
                step,
                core,
                requests,
                now,
                place=place,
                trigger=trigger,
                topology_changed=topology_changed,
            )
        )
        record = await self._commit(result)
        for event in events:
            if event.workload_id is not None:
                self._unqueue(event.workload_id, event.revision)
        try:
            await self._enforce(result)
        finally:
            # Committed: the callers are told even when the kernel refused a write (the
            # workload's status and /status say so).
            for answer in result.answers:
                self._answer(answer)
            for listener in self._listeners:
                listener(self._core.placement)
        return record

    async def _commit(self, result: StepResult) -> DecisionRecord:
        """Store the decision (the acknowledgement point), then make it the agent's."""
        commit = result.commit
        key = topology_key(self.topology)

        def write() -> DecisionRecord:
            return self.store.commit_decision(
                at_s=commit.at_s,
                trigger=commit.trigger,
                events=commit.events,
                workloads=commit.workloads,
                removed=commit.removed,
                assignments=commit.assignments,
                duration_ms=commit.duration_ms,
                allocator=commit.allocator,
                moves=commit.moves,
                detail=commit.detail,
                topology_key=key,
            )

        record: DecisionRecord = await self._store(write)
        self._workloads = settle(self._workloads, result)
        self._core = result.state
        self._views = None
        self._last_decision = record
        self._decisions += 1
        for event in commit.events:
            self._remember(commit.at_s, event, record.id)
        decision = result.decision
        if decision.fallback:
            self._fallbacks += 1
        self.observer.decision(
            trigger=commit.trigger.split("+", maxsplit=1)[0],
            duration_s=decision.duration_s,
            fallback=decision.fallback,
        )
        if decision.moves:
            self.observer.moves(decision.moves)
        log.info(
            "agent.decision",
            extra={
                "decision": record.id,
                "trigger": commit.trigger,
                "events": len(commit.events),
                "workloads": len(commit.workloads),
                "duration_ms": round(record.duration_ms, 3),
                "moves": record.moves,
            },
        )
        return record

    def _answer(self, answer: Answer) -> None:
        future = self._waiters.pop(answer.waiter, None)
        if future is None or future.done():
            return
        wid = answer.workload_id
        if answer.kind is AnswerKind.REFUSED:
            future.set_exception(PlacementError(answer.reason, workload_id=wid))
        elif answer.kind is AnswerKind.REMOVED:
            future.set_result(True)
        elif answer.kind is AnswerKind.PENDING and answer.stored is not None:
            future.set_result(WorkloadView(answer.stored, None, None))
        else:
            view = self.view(wid)
            if view is None and answer.stored is not None:
                view = WorkloadView(answer.stored, None, None)
            future.set_result(view)

    async def _enforce(self, result: StepResult) -> None:
        """Write the decision into the kernel, ordered with the controller's writes: BE
        gives up CPUs before the enforcer grants them, and takes new ones only after."""
        enforce = result.enforce
        grow_after = await self._rebound_control(enforce.placement)
        reports: list[ApplyReport] = []
        if enforce.released:
            released = list(enforce.released)
            reports.append(await self.effects.run(lambda: self.enforcer.release(released)))
        items, placement = list(enforce.workloads), enforce.placement
        reports.append(await self.effects.run(lambda: self.enforcer.apply(items, placement)))
        members = tuple(self.be_box_workloads())
        if self.control is not None:
            if grow_after:
                pool = be_pool(self.topology, enforce.placement)
                await self.control.runtime.reapply(
                    f"placement changed the BE pool to {pool}", record=True
                )
            elif members != self._be_members:
                # New BE cgroups get their CPUs from the controller, their owner.
                await self.control.runtime.reapply("the BE workloads in the box changed")
        self._be_members = members
        for report in reports:
            self._account(report)
        errors = tuple(e for r in reports for e in r.errors)
        self._ledger.release_errors = reports[0].errors if enforce.released else ()
        if errors:
            self.observer.write_errors(len(errors))
            log.warning("agent.enforce_errors", extra={"count": len(errors), "first": errors[0]})

    def _account(self, report: ApplyReport) -> None:
        """Record, per workload, what the kernel holds after ``report``."""
        self._ledger.account(report, self._workloads)
        self._views = None

    async def _reconcile(self) -> dict[str, Any]:
        """Check drift of the enforcer's files and repair it; the controller re-writes its
        own files (each file is repaired by its owner only)."""
        items = [s.workload for s in self._workloads.values()]
        placement = self._core.placement
        found = await self.effects.run(lambda: self.enforcer.drift(items, placement))
        remaining = found
        report = ApplyReport()
        if found:
            report = await self.effects.run(lambda: self.enforcer.repair(items, placement))
            self._account(report)
            remaining = await self.effects.run(lambda: self.enforcer.drift(items, placement))
        if self.control is not None:
            await self.control.runtime.reapply("re-applied by the periodic reconcile")
        repaired = max(len(found) - len(remaining), 0)
        self._drift = list(remaining)
        empty = await self._recreated_empty(found, remaining)
        if report.errors:
            self.observer.write_errors(len(report.errors))
        self.observer.drift(found=len(found), repaired=repaired)
        now = self._clock()
        self._last_reconcile = {
            "at_s": now,
            "found": [_drift_json(d) for d in found[:100]],
            "found_total": len(found),
            "repaired": repaired,
            "recreated_empty": empty,
            "errors": list(report.errors[:20]),
        }
        if found:
            log.warning("agent.drift", extra={"found": len(found), "repaired": repaired})
            self._log_soon(
                [
                    LoggedEvent("drift", d.workload_id, f"{d.file}: {d.got!r} -> {d.want!r}")
                    for d in found[:100]
                ]
            )
        settings = self.settings
        await self._store(
            lambda: self.store.prune(
                keep_events=settings.event_log_keep,
                keep_decisions=settings.event_log_keep,
                usage_before_s=now - settings.usage_retention_s,
            )
        )
        return self._last_reconcile

    async def _recreated_empty(
        self, found: Sequence[Drift], remaining: Sequence[Drift]
    ) -> list[str]:
        """Workloads whose cgroup was missing, is back, and holds no process: their
        processes were gone with it (said in the reconcile summary and the log)."""
        still = {d.workload_id for d in remaining if d.want == "exists"}
        back = sorted({d.workload_id for d in found if d.want == "exists"} - still)
        specs = [self._workloads[w].workload for w in back if w in self._workloads]
        if not specs:
            return []
        counts = await self.effects.run(lambda: [len(self.enforcer.members(w)) for w in specs])
        empty = [w.id for w, n in zip(specs, counts, strict=True) if n == 0]
        if empty:
            log.warning("agent.recreated_empty", extra={"workloads": empty})
        return empty

    # --- usage sampling -------------------------------------------------------------
    async def sample(self) -> None:
        """Read every placed workload's CPU time (off the loop) and store finished windows;
        a workload without usage data is flagged in /status and the metrics."""
        placed = {w: s for w, s in self._workloads.items() if s.status is Status.PLACED}
        targets = {w: self.enforcer.cgroup_of(s.workload) for w, s in placed.items()}
        capacities = {w: float(s.workload.cpus) for w, s in placed.items()}
        results, throttling = await asyncio.to_thread(self._read_round, targets)
        self._throttling = throttling
        rows = self._sampler.record(self._clock(), results, capacities)
        self._views = None
        if rows:
            await self._store(lambda: self.store.add_usage(rows))

    def _read_round(
        self, targets: Mapping[str, str | None]
    ) -> tuple[dict[str, UsageResult], dict[str, Throttling]]:
        """One sampling round's blocking reads (a worker thread): usage and throttling."""
        return (
            read_usages(self._usage_reader, targets),
            read_throttling(self._throttle_reader, targets),
        )

    def workload_series(self) -> list[WorkloadSeries]:
        """The per-workload metric series: one per workload that holds CPUs now."""
        assignments = self._core.placement.assignments
        out: list[WorkloadSeries] = []
        for wid, stored in self._workloads.items():
            assignment = assignments.get(wid)
            if assignment is None or stored.status is Status.REFUSED:
                continue
            spec = stored.workload
            out.append(
                WorkloadSeries(
                    workload_id=wid,
                    qos=spec.qos.value,
                    policy=spec.policy.value,
                    cpus=len(assignment.cpuset),
                    request_cores=float(spec.cpus),
                    usage_cores=self._sampler.latest.get(wid),
                    throttling=self._throttling.get(wid),
                )
            )
        return out

    def apply_settings(self, live: Mapping[str, Any]) -> AgentSettings:
        """Take the changed `LIVE_FIELDS` of a reloaded config (field -> value): the
        coalescing times from the next batch, periods from now (a wait in progress is
        re-timed), limits from the next request. Returns the new settings; `InputError`
        for a field that cannot change live (nothing is applied then)."""
        wrong = sorted(set(live) - LIVE_FIELDS)
        if wrong:
            raise InputError(wrong[0], "cannot change while the agent runs", "restart the agent")
        settings = self.settings.model_copy(update=dict(live))
        self.settings = settings
        self._queue.retune(
            window_s=settings.coalesce_window_s,
            max_s=settings.coalesce_max_s,
            burst_gap_s=settings.coalesce_burst_gap_s,
        )
        self._sampler.downsample_s = settings.downsample_s
        retuned, self._retuned = self._retuned, asyncio.Event()
        retuned.set()
        return settings

    def config_status(self) -> dict[str, Any]:
        """The ``config`` section of /status: the file read and the last reload."""
        source = self.settings.source
        last = self.reloads.last
        return {
            "path": None if source is None or source.path is None else str(source.path),
            "last_reload": None if last is None else last.to_json(),
            "reloads": dict(self.reloads.counts),
        }

    def usage_status(self) -> dict[str, Any]:
        """The ``usage`` section of /status: where usage is read and each workload's state."""
        coverage = self._sampler.coverage()
        return {
            "reader": self._usage_reader.describe(),
            "counts": {str(k): v for k, v in coverage_counts(coverage).items()},
            "workloads": {wid: c.to_json() for wid, c in coverage.items()},
        }


def _drift_json(drift: Drift) -> dict[str, str]:
    return {
        "workload_id": drift.workload_id,
        "file": drift.file,
        "want": drift.want,
        "got": drift.got,
    }
