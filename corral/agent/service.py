"""The agent's asyncio core: one decision task owns the placement; API calls queue events.

Root tasks (all cancelled when one dies): the decision loop, the periodic rebalance (with
jitter), the periodic reconcile (drift check and repair), usage sampling and, when the
config has a control section, the colocation controller (`AgentControl`).

Every change of the workload set goes through the coalescing queue, so a burst becomes one
decision, and the decision loop is the only writer of the assignment. A PUT either commits
the workload as pending and returns (acknowledged, placed by the next decision) or waits
for the decision and is refused with nothing stored when it cannot be placed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from corral.agent.config import AgentSettings
from corral.agent.decide import Decision, decide
from corral.agent.enforcer import ApplyReport, Drift, Enforcer
from corral.agent.events import CoalescingQueue, Event, EventKind
from corral.agent.metrics import Gauges
from corral.agent.observer import NullObserver, Observer
from corral.agent.predictions import AgentPredictor
from corral.agent.sampler import UsageSampler, read_usage_ns
from corral.agent.state import (
    DecisionRecord,
    LoggedEvent,
    StateStore,
    Status,
    StoredWorkload,
)
from corral.control.ownership import be_pool, be_pool_cores, confine_be, controlled_by_controller
from corral.control.runtime import ActionRecord, ColocationRuntime
from corral.errors import CorralError, PlacementError
from corral.placement.assignment import Assignment, Placement
from corral.placement.pools import immovable_cpus
from corral.placement.workload import Policy, Qos, Workload
from corral.topology.model import Topology

log = logging.getLogger(__name__)


class ShuttingDownError(CorralError):
    """The agent stopped before it could decide on a request."""


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """A workload as the API shows it."""

    stored: StoredWorkload
    assignment: Assignment | None
    usage_cores: float | None

    def to_json(self) -> dict[str, Any]:
        """JSON for GET /workloads."""
        w = self.stored.workload
        usage = self.usage_cores
        return {
            "id": w.id,
            "spec": w.model_dump(mode="json", exclude_none=True),
            "status": self.stored.status.value,
            "reason": self.stored.reason,
            "cpuset": None if self.assignment is None else str(self.assignment.cpuset),
            "assignment_reason": None if self.assignment is None else self.assignment.reason,
            "revision": self.stored.revision,
            "created_s": self.stored.created_s,
            "updated_s": self.stored.updated_s,
            "usage_cores": None if usage is None else round(usage, 4),
            "utilisation": None if usage is None else round(usage / w.cpus, 4),
        }


@dataclass(frozen=True, slots=True)
class AgentControl:
    """The colocation controller as the agent runs it.

    Who owns what (the full rule is `corral.control.ownership`'s): the agent's placement
    bounds BE to its pool and the controller divides that pool; the agent enforces BE
    workloads in its box on the controller's CPUs, its reconcile leaves the BE box's CPU
    knobs (`CONTROLLED_FILES`) to the controller, and the controller re-applies its state
    after every enforcement write. ``be_cgroup`` is the box the controller acts on;
    ``agent_box`` says it is the agent's own BE box (its BE workloads live there).
    """

    runtime: ColocationRuntime
    be_cgroup: str
    agent_box: bool


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a PUT did: created or updated, and whether it waited for placement."""

    created: bool
    queued: bool
    view: WorkloadView


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
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.store = store
        self.enforcer = enforcer
        self.observer: Observer = observer or NullObserver()
        self._clock = clock
        self._rng = rng or random.Random()
        self._queue = CoalescingQueue(
            window_s=settings.coalesce_window_s, max_s=settings.coalesce_max_s
        )
        self._workloads: dict[str, StoredWorkload] = {}
        self._placement = Placement(assignments={}, pools={})
        self._revision = 0
        # Requests queued and not decided yet: id -> (revision, exclusive CPUs asked for).
        self._queued: dict[str, tuple[int, int]] = {}
        self._decided: dict[str, Workload] = {}  # the specs the current placement is for
        self._last_decision: DecisionRecord | None = None
        self._decisions = 0
        self._fallbacks = 0
        self._drift: list[Drift] = []
        self._last_reconcile: dict[str, Any] = {}
        self._enforce_errors: tuple[str, ...] = ()
        self._sampler = UsageSampler(settings.downsample_s)
        self._started_s = clock()
        self.control: AgentControl | None = None
        self.predictor = AgentPredictor.open(settings.predictor, settings.state_path)

    # --- life cycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Reload the stored state, re-place if the topology changed (or anything was left
        pending by a crash), and re-apply the assignment to the kernel."""
        self._workloads = self.store.load_workloads()
        self._revision = self.store.max_revision()
        self._decisions = self.store.decision_count()
        self._last_decision = self.store.last_decision()
        previous = self.store.load_assignments()
        key = topology_key(self.topology)
        stored_key = self.store.meta("topology")
        changed = stored_key is not None and stored_key != key
        if changed:
            log.warning(
                "agent.topology_changed",
                extra={"online": str(self.topology.all_cpus), "workloads": len(self._workloads)},
            )
            self.store.log_events(
                self._clock(),
                [LoggedEvent("topology-changed", None, f"online {self.topology.all_cpus}")],
            )
        previous = {
            wid: a
            for wid, a in previous.items()
            if wid in self._workloads
            and self._workloads[wid].status is not Status.PENDING  # spec may have changed
            and a.cpuset.issubset(self.topology.all_cpus)
        }
        self._placement = Placement(assignments=previous, pools={})
        await self._decide([], trigger="restart", rebalance=False, topology_changed=changed)
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
        async with asyncio.TaskGroup() as group:
            group.create_task(self._decision_loop(), name="decisions")
            group.create_task(
                self._every(self.settings.rebalance_period_s, self._periodic_rebalance, True),
                name="rebalance",
            )
            group.create_task(
                self._every(self.settings.reconcile_period_s, self._periodic_reconcile, False),
                name="reconcile",
            )
            group.create_task(
                self._every(self.settings.sample_period_s, self.sample, False), name="sampler"
            )
            if self.control is not None:
                group.create_task(self.control.runtime.run(), name="control")

    def close(self) -> None:
        """Refuse every queued request that waits and close the store."""
        for event in self._queue.drain():
            if event.reply is not None and not event.reply.done():
                event.reply.set_exception(ShuttingDownError("the agent is shutting down; retry"))
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

    async def _every(self, period: float, job: Callable[[], Any], jitter: bool) -> None:
        while True:
            spread = self.settings.rebalance_jitter if jitter else 0.0
            await asyncio.sleep(period * (1 + self._rng.uniform(-spread, spread)))
            await job()

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
        self._queue.put(Event(EventKind.RECONCILE, detail="periodic"))

    # --- requests -------------------------------------------------------------------
    def _check_admission(self, workload: Workload) -> None:
        """Refuse at once an exclusive request that cannot fit even before deciding."""
        if workload.policy is not Policy.EXCLUSIVE:
            return
        others = [s.workload for wid, s in self._workloads.items() if wid != workload.id]
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

    async def put(self, workload: Workload, *, wait: bool) -> PutResult:
        """Create or update a workload. Without ``wait``: committed as pending, placed by the
        next decision. With ``wait``: returns once placed and committed, or raises
        `PlacementError` with nothing stored."""
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
            try:
                self.store.put_pending(stored, event=LoggedEvent("queued", workload.id, kind))
            except BaseException:
                self._unqueue(workload.id, revision, earlier)
                raise
            self._workloads[workload.id] = stored
            self._queue.put(
                Event(
                    kind, workload.id, workload, revision, stored=True, created_s=stored.created_s
                )
            )
            return PutResult(created, True, WorkloadView(stored, None, None))
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(Event(kind, workload.id, workload, revision, reply=reply))
        view: WorkloadView = await asyncio.shield(reply)
        return PutResult(created, False, view)

    async def delete(self, workload_id: str) -> bool:
        """Remove a workload; False if it is unknown. Returns once the removal is committed."""
        if workload_id not in self._workloads and workload_id not in self._queued:
            return False
        self._revision += 1
        self._queued[workload_id] = (self._revision, 0)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(Event(EventKind.REMOVE, workload_id, None, self._revision, reply=reply))
        found: bool = await asyncio.shield(reply)
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
            self._placement.assignments.get(workload_id),
            self._sampler.latest.get(workload_id),
        )

    def views(self) -> list[WorkloadView]:
        """Every workload, by id."""
        return [v for wid in sorted(self._workloads) if (v := self.view(wid)) is not None]

    @property
    def placement(self) -> Placement:
        """The current placement."""
        return self._placement

    def gauges(self) -> Gauges:
        """What the metrics gauges show now."""
        counts = Counter((s.workload.qos.value, s.status.value) for s in self._workloads.values())
        return Gauges(dict(counts), len(self._queue), len(self._drift))

    def status(self) -> dict[str, Any]:
        """The /status document."""
        by_status = Counter(s.status.value for s in self._workloads.values())
        return {
            "topology": {"name": self.topology.name, "describe": self.topology.describe()},
            "online": str(self.topology.all_cpus),
            "uptime_s": round(self._clock() - self._started_s, 3),
            "dry_run": self.enforcer.dry_run,
            "enforcer": self.enforcer.describe(),
            "pending_events": len(self._queue),
            "workloads": {"total": len(self._workloads), **dict(by_status)},
            "decisions_total": self._decisions,
            "last_decision": None if self._last_decision is None else self._last_decision.to_json(),
            "solver": {
                "allocator": self.settings.allocator,
                "budget_ms": self.settings.budget_ms,
                "fallbacks": self._fallbacks,
            },
            "drift": {
                "outstanding": [_drift_json(d) for d in self._drift[:100]],
                "last_reconcile": self._last_reconcile,
            },
            "enforcement_errors": list(self._enforce_errors),
            "pools": {name: str(cpus) for name, cpus in self._placement.pools.items()},
            "control": None if self.control is None else self._control_status(self.control),
            "predictions": self.predictor.status(),
            "recent_events": self.store.recent_events(20),
        }

    # --- the colocation controller ------------------------------------------------------
    def _control_status(self, control: AgentControl) -> dict[str, Any]:
        doc = control.runtime.status()
        doc["be_cgroup"] = control.be_cgroup
        doc["be_pool"] = str(be_pool(self.topology, self._placement))
        return doc

    def be_box_workloads(self) -> list[str]:
        """Placed BE workloads that live in the agent's BE box (created by the agent)."""
        return sorted(
            wid
            for wid, s in self._workloads.items()
            if s.workload.qos is Qos.BE
            and s.workload.cgroup is None
            and s.workload.container_id is None
            and wid in self._placement.assignments
        )

    def control_event(self, record: ActionRecord) -> None:
        """Store one controller action (or mode change) in the event log, with its reason."""
        if record.kind == "mode":
            kind = "control-mode"
        else:
            kind = "control-refused" if record.error else "control"
        detail = f"{record.what}: {record.reason}"
        if record.error:
            detail += f" (refused: {record.error})"
        self.store.log_events(self._clock(), [LoggedEvent(kind, record.workload, detail)])

    def _for_enforcer(self, placement: Placement, *, rebound: bool) -> Placement:
        """What the enforcer is given: with a controller, BE in the agent's box on the
        controller's CPUs; ``rebound`` first re-bounds the controller to the BE pool."""
        control = self.control
        if control is None:
            return placement
        if rebound and control.runtime.set_cores(be_pool_cores(self.topology, placement)):
            pool = be_pool(self.topology, placement)
            control.runtime.reapply(f"placement changed the BE pool to {pool}", record=True)
        if not control.agent_box:
            return placement
        return confine_be(placement, self.be_box_workloads(), control.runtime.be_cpus)

    def _control_reapply(self, why: str) -> None:
        if self.control is not None:
            self.control.runtime.reapply(f"re-applied after {why}")

    # --- the decision loop ----------------------------------------------------------
    async def _decision_loop(self) -> None:
        while True:
            batch = await self._queue.next_batch()
            try:
                await self._handle(batch)
            except Exception as err:
                # A decision that failed leaves the committed state as it was; the callers
                # waiting on it get the error and the loop carries on with the next batch.
                log.exception("agent.decision_failed")
                for event in batch:
                    if event.workload_id is not None:
                        self._unqueue(event.workload_id, event.revision)
                    if event.reply is not None and not event.reply.done():
                        event.reply.set_exception(err)

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
            summary = await self._reconcile()
            for event in reconciles:
                if event.reply is not None and not event.reply.done():
                    event.reply.set_result(summary)

    async def _decide(
        self,
        events: Sequence[Event],
        *,
        trigger: str,
        rebalance: bool,
        topology_changed: bool = False,
    ) -> DecisionRecord:
        now = self._clock()
        working = dict(self._workloads)
        previous = dict(self._placement.assignments)
        removed: dict[str, int] = {}
        released: dict[str, Workload] = {}
        waiters: dict[str, list[Event]] = {}  # PUTs that wait for this decision, by id
        unstored: set[str] = set()  # ids whose latest version here is not committed yet
        removes: list[Event] = []
        for event in events:
            wid = event.workload_id
            assert wid is not None
            if event.kind is EventKind.REMOVE:
                old = working.pop(wid, None)
                previous.pop(wid, None)
                removed[wid] = event.revision
                if old is not None:
                    released[wid] = old.workload
                removes.append(event)
                unstored.discard(wid)
                for waiter in waiters.pop(wid, []):
                    # Acknowledged in order: the PUT happened, then the removal.
                    _resolve(waiter, WorkloadView(_pending(waiter, now), None, None))
                continue
            assert event.workload is not None
            old = working.get(wid)
            if self._decided.get(wid) != event.workload:
                previous.pop(wid, None)  # a changed spec may get other CPUs
            working[wid] = StoredWorkload(
                event.workload,
                Status.PENDING,
                "",
                event.revision,
                old.created_s if old is not None else (event.created_s or now),
                now,
            )
            removed.pop(wid, None)
            released.pop(wid, None)
            if event.stored:
                unstored.discard(wid)
            else:
                unstored.add(wid)
            if event.reply is not None:
                waiters.setdefault(wid, []).append(event)
        predicted = await asyncio.to_thread(
            self.predictor.predicted, [s.workload for s in working.values()], now
        )
        while True:
            decision: Decision = await asyncio.to_thread(
                decide,
                self.topology,
                [s.workload for s in working.values()],
                previous,
                allocator=self.settings.allocator,
                budget_ms=self.settings.budget_ms,
                rebalance=rebalance,
                predicted=predicted,
            )
            refused = [wid for wid in decision.placement.refusals if wid in unstored]
            if not refused:
                break
            for wid in refused:
                unstored.discard(wid)
                error = PlacementError(decision.placement.refusals[wid].reason, workload_id=wid)
                for waiter in waiters.pop(wid, []):
                    if waiter.reply is not None and not waiter.reply.done():
                        waiter.reply.set_exception(error)
                if wid in self._workloads:
                    working[wid] = self._workloads[wid]
                    if wid in self._placement.assignments:
                        previous[wid] = self._placement.assignments[wid]
                else:
                    working.pop(wid)
        placement = decision.placement
        final: dict[str, StoredWorkload] = {}
        for wid, stored in working.items():
            if wid in placement.assignments:
                final[wid] = replace(stored, status=Status.PLACED, reason="")
            else:
                refusal = placement.refusals.get(wid)
                final[wid] = replace(
                    stored,
                    status=Status.REFUSED,
                    reason=refusal.reason if refusal else "not placed",
                )
        logged = [LoggedEvent(e.kind.value, e.workload_id, e.detail) for e in events] or [
            LoggedEvent(trigger, None, "topology changed" if topology_changed else "")
        ]
        detail = dict(decision.detail)
        detail.update({"fallback": decision.fallback, "adopted": decision.adopted})
        record = self.store.commit_decision(
            at_s=now,
            trigger=trigger,
            events=logged,
            workloads=final.values(),
            removed=removed,
            assignments=placement.assignments,
            duration_ms=decision.duration_s * 1000,
            allocator=decision.allocator,
            moves=decision.moves,
            detail=detail,
            topology_key=topology_key(self.topology),
        )
        merged = dict(final)
        for wid, current in self._workloads.items():
            # Writes acknowledged while this decision was computed stay for the next one.
            decided = max(final[wid].revision if wid in final else 0, removed.get(wid, 0))
            if current.revision > decided:
                merged[wid] = current
        self._workloads = merged
        self._decided = {wid: s.workload for wid, s in final.items()}
        self._placement = placement
        self._last_decision = record
        self._decisions += 1
        for event in events:
            if event.workload_id is not None:
                self._unqueue(event.workload_id, event.revision)
        if decision.fallback:
            self._fallbacks += 1
        self.observer.decision(
            trigger=trigger.split("+", maxsplit=1)[0],
            duration_s=decision.duration_s,
            fallback=decision.fallback,
        )
        if decision.moves:
            self.observer.moves(decision.moves)
        log.info(
            "agent.decision",
            extra={
                "decision": record.id,
                "trigger": trigger,
                "events": len(events),
                "workloads": len(final),
                "duration_ms": round(record.duration_ms, 3),
                "moves": record.moves,
            },
        )
        await self._enforce(final, placement, released)
        for wid, events_of in waiters.items():
            refused_error: PlacementError | None = None
            if wid in placement.refusals:
                refused_error = PlacementError(placement.refusals[wid].reason, workload_id=wid)
            for waiter in events_of:
                if (
                    refused_error is not None
                    and waiter.reply is not None
                    and not waiter.reply.done()
                ):
                    waiter.reply.set_exception(refused_error)
                else:
                    _resolve(waiter, self.view(wid) or WorkloadView(working[wid], None, None))
        for event in removes:
            if event.reply is not None and not event.reply.done():
                event.reply.set_result(True)
        return record

    async def _enforce(
        self,
        workloads: Mapping[str, StoredWorkload],
        placement: Placement,
        released: Mapping[str, Workload],
    ) -> None:
        items = [s.workload for s in workloads.values()]
        placement = self._for_enforcer(placement, rebound=True)
        reports: list[ApplyReport] = []
        if released:
            reports.append(await asyncio.to_thread(self.enforcer.release, list(released.values())))
        reports.append(await asyncio.to_thread(self.enforcer.apply, items, placement))
        self._control_reapply("a placement was enforced")
        errors = tuple(e for r in reports for e in r.errors)
        self._enforce_errors = errors
        if errors:
            self.observer.write_errors(len(errors))
            log.warning("agent.enforce_errors", extra={"count": len(errors), "first": errors[0]})

    async def _reconcile(self) -> dict[str, Any]:
        items = [s.workload for s in self._workloads.values()]
        placement = self._for_enforcer(self._placement, rebound=False)

        async def drift() -> list[Drift]:
            found = await asyncio.to_thread(self.enforcer.drift, items, placement)
            if self.control is None:
                return found
            box = self.control.be_cgroup  # the BE box's CPU knobs are the controller's
            return [d for d in found if not controlled_by_controller(d.file, box)]

        found = await drift()
        remaining = found
        report = ApplyReport()
        if found:
            report = await asyncio.to_thread(self.enforcer.repair, items, placement)
            remaining = await drift()
        self._control_reapply("a reconcile")
        repaired = len(found) - len(remaining)
        self._drift = list(remaining)
        if report.errors:
            self.observer.write_errors(len(report.errors))
        self.observer.drift(found=len(found), repaired=max(repaired, 0))
        now = self._clock()
        self._last_reconcile = {
            "at_s": now,
            "found": [_drift_json(d) for d in found[:100]],
            "found_total": len(found),
            "repaired": max(repaired, 0),
            "errors": list(report.errors[:20]),
        }
        if found:
            log.warning("agent.drift", extra={"found": len(found), "repaired": max(repaired, 0)})
            self.store.log_events(
                now,
                [
                    LoggedEvent("drift", d.workload_id, f"{d.file}: {d.got!r} -> {d.want!r}")
                    for d in found[:100]
                ],
            )
        self.store.prune(
            keep_events=self.settings.event_log_keep,
            keep_decisions=self.settings.event_log_keep,
            usage_before_s=now - self.settings.usage_retention_s,
        )
        return self._last_reconcile

    # --- usage sampling -------------------------------------------------------------
    async def sample(self) -> None:
        """Read every placed workload's CPU time and store finished windows."""
        targets: dict[str, tuple[str, float]] = {}
        for wid, stored in self._workloads.items():
            cgroup = self.enforcer.cgroup_of(stored.workload)
            if cgroup is not None and stored.status is Status.PLACED:
                targets[wid] = (cgroup, stored.workload.cpus)
        root = self.settings.cgroup_root

        def read() -> dict[str, tuple[int, float]]:
            out: dict[str, tuple[int, float]] = {}
            for wid, (cgroup, capacity) in targets.items():
                usage = read_usage_ns(root, cgroup)
                if usage is not None:
                    out[wid] = (usage, capacity)
            return out

        readings = await asyncio.to_thread(read)
        rows = self._sampler.observe(self._clock(), readings)
        self.store.add_usage(rows)


def _pending(event: Event, now: float) -> StoredWorkload:
    assert event.workload is not None
    return StoredWorkload(event.workload, Status.PENDING, "", event.revision, now, now)


def _resolve(event: Event, value: Any) -> None:
    if event.reply is not None and not event.reply.done():
        event.reply.set_result(value)


def _drift_json(drift: Drift) -> dict[str, str]:
    return {
        "workload_id": drift.workload_id,
        "file": drift.file,
        "want": drift.want,
        "got": drift.got,
    }
