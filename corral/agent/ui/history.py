"""The web view's time series: a bounded in-memory ring of what the agent showed lately.

Nothing in the agent keeps a time series of the controller's state (``/status`` shows the
latest observation and the last actions only), so `HostHistory` samples it: every
``period_s`` it reads ``AgentService.status()`` and ``workloads_json()`` (both served from
memory, never waiting for the store or a source) and keeps

* one `HistoryPoint` per period for the last ``keep_s`` (an hour by default): each LC
  workload's measured tail latency and SLO target, the controller's mode, slack and LC
  load (the controller's history), the CPUs the controller gives BE, and the CPU the BE
  and LC workloads used (the usage sampler's latest rates);
* the agent's event log as ``/status`` shows it (``recent_events``: placement events,
  drift, every controller action and mode change with its reason) plus one entry per
  decision (``last_decision``), deduplicated, at most ``max_events`` of them. ``/status``
  shows the 20 newest events, so a burst of more than 20 events within one period loses
  the older ones here; the full log stays in the agent's store.

The building of points and entries is pure (`point_from`, `entries_from`); `HostHistory.run`
is the periodic task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from corral.errors import InputError
from corral.topology.cpuset import CpuSet

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 2.0
"""Seconds between samples: the controller's top period is 15 s and its sub-controller's
2 s, so 2 s shows every step; an hour is then 1800 points (about 200 kB of JSON)."""
DEFAULT_KEEP_S = 3600.0
"""How far back the time view reaches, s (the issue asks for the last hour)."""
DEFAULT_MAX_EVENTS = 1000
"""Log entries kept in memory."""


class StatusSource(Protocol):
    """What the history reads: `corral.agent.service.AgentService` satisfies it."""

    def status(self) -> dict[str, Any]:
        """The /status document."""
        ...

    def workloads_json(self) -> list[dict[str, Any]]:
        """GET /workloads rows."""
        ...


@dataclass(frozen=True, slots=True)
class LcPoint:
    """One LC workload's tail latency against its SLO at one sample."""

    name: str
    latency_ms: float | None
    target_ms: float | None
    load_rps: float | None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """The host at one sample (controller fields are None without a controller)."""

    at_s: float
    mode: str | None
    slack: float | None
    load: float | None
    """LC load as a fraction of its peak, as the controller computed it."""
    lc: tuple[LcPoint, ...]
    be_cpus: int | None
    """CPUs the controller lets BE run on."""
    be_share: float | None
    """``be_cpus`` over the host's CPUs."""
    be_usage_share: float | None
    """CPU the BE workloads used, over the host's CPUs (None when none was sampled)."""
    lc_usage_share: float | None
    """CPU the LC workloads used, over the host's CPUs."""

    def to_json(self) -> dict[str, Any]:
        """The JSON form of ``GET /ui/api/history``."""
        return {
            "t": round(self.at_s, 3),
            "mode": self.mode,
            "slack": self.slack,
            "load": self.load,
            "lc": [
                {
                    "name": p.name,
                    "latency_ms": p.latency_ms,
                    "target_ms": p.target_ms,
                    "load_rps": p.load_rps,
                }
                for p in self.lc
            ],
            "be_cpus": self.be_cpus,
            "be_share": self.be_share,
            "be_usage_share": self.be_usage_share,
            "lc_usage_share": self.lc_usage_share,
        }


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the decisions and events log."""

    at_s: float
    kind: str
    workload_id: str | None
    detail: str
    decision_id: int | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two entries the same (an event seen in two samples is kept once)."""
        return (self.at_s, self.kind, self.workload_id, self.detail, self.decision_id)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _usage_share(rows: Sequence[Mapping[str, Any]], qos: str, cpus: int) -> float | None:
    used = [
        float(r["usage_cores"])
        for r in rows
        if r.get("usage_cores") is not None and r.get("spec", {}).get("qos") == qos
    ]
    return round(sum(used) / cpus, 4) if used else None


def point_from(
    status: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, cpus: int, at_s: float
) -> HistoryPoint:
    """The `HistoryPoint` of one ``/status`` document and the ``GET /workloads`` rows of
    the same moment, on a host of ``cpus`` CPUs."""
    control = status.get("control")
    be_usage = _usage_share(rows, "BE", cpus)
    lc_usage = _usage_share(rows, "LC", cpus)
    if not isinstance(control, Mapping):
        return HistoryPoint(at_s, None, None, None, (), None, None, be_usage, lc_usage)
    lc = tuple(
        LcPoint(
            str(w.get("name")),
            _number(w.get("latency_ms")),
            _number((w.get("slo") or {}).get("target_ms")),
            _number(w.get("load_rps")),
        )
        for w in control.get("lc") or ()
    )
    if not lc and control.get("slo"):  # a controller without per-workload sources
        observed = control.get("observation") or {}
        lc = (
            LcPoint(
                "lc",
                _number(observed.get("latency_ms")),
                _number(control["slo"].get("target_ms")),
                _number(observed.get("load_rps")),
            ),
        )
    be_text = (control.get("be") or {}).get("cpus")
    be_cpus = len(CpuSet.parse(be_text)) if isinstance(be_text, str) else None
    return HistoryPoint(
        at_s=at_s,
        mode=None if control.get("mode") is None else str(control["mode"]),
        slack=_number(control.get("slack")),
        load=_number(control.get("load")),
        lc=lc,
        be_cpus=be_cpus,
        be_share=None if be_cpus is None else round(be_cpus / cpus, 4),
        be_usage_share=be_usage,
        lc_usage_share=lc_usage,
    )


def entries_from(status: Mapping[str, Any]) -> list[LogEntry]:
    """The log entries of one ``/status`` document, oldest first: its recent events and
    its last decision."""
    out: list[LogEntry] = []
    for event in reversed(status.get("recent_events") or []):
        at = _number(event.get("at_s"))
        if at is None:
            continue
        decision = event.get("decision_id")
        out.append(
            LogEntry(
                at,
                str(event.get("kind")),
                event.get("workload_id"),
                str(event.get("detail") or ""),
                decision if isinstance(decision, int) else None,
            )
        )
    last = status.get("last_decision")
    if isinstance(last, Mapping) and _number(last.get("at_s")) is not None:
        moves = last.get("moves")
        detail = (
            f"decision {last.get('id')} ({last.get('trigger')}): {last.get('workloads')} "
            f"workloads, {moves if moves is not None else 0} moves, {last.get('allocator')} "
            f"in {last.get('duration_ms')} ms"
        )
        decision_id = last.get("id")
        out.append(
            LogEntry(
                float(last["at_s"]),
                "decision",
                None,
                detail,
                decision_id if isinstance(decision_id, int) else None,
            )
        )
    out.sort(key=lambda e: e.at_s)
    return out


class HostHistory:
    """The ring buffers of the time view, fed by `run` (or `sample`) from ``source``.

    ``period_s`` between samples, points kept for ``keep_s``, at most ``max_events`` log
    entries. `InputError` for a period or span that is not positive."""

    def __init__(
        self,
        source: StatusSource,
        *,
        cpus: int,
        period_s: float = DEFAULT_PERIOD_S,
        keep_s: float = DEFAULT_KEEP_S,
        max_events: int = DEFAULT_MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if period_s <= 0:
            raise InputError("period_s", f"{period_s} is not positive", "e.g. 2 s")
        if keep_s < period_s:
            raise InputError("keep_s", f"{keep_s} is shorter than one period", "e.g. 3600 s")
        if max_events < 1:
            raise InputError("max_events", f"{max_events} is below 1", "e.g. 1000")
        self.source = source
        self.cpus = cpus
        self.period_s = period_s
        self.keep_s = keep_s
        self._clock = clock
        self.points: deque[HistoryPoint] = deque(maxlen=int(keep_s / period_s) + 1)
        self.events: deque[tuple[int, LogEntry]] = deque(maxlen=max_events)
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._max_seen = 4 * max_events
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> HistoryPoint:
        """Take one sample now (reads memory only: cheap, never blocks)."""
        status = self.source.status()
        now = self._clock()
        point = point_from(status, self.source.workloads_json(), cpus=self.cpus, at_s=now)
        self.points.append(point)
        while self.points and self.points[0].at_s < now - self.keep_s:
            self.points.popleft()
        self._ingest(entries_from(status))
        return point

    def _ingest(self, entries: Iterable[LogEntry]) -> None:
        for entry in entries:
            key = entry.key
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > self._max_seen:
                self._seen.popitem(last=False)
            self._seq += 1
            self.events.append((self._seq, entry))

    async def run(self) -> None:
        """Sample every ``period_s`` until cancelled (the first sample at once)."""
        while True:
            self.sample()
            await asyncio.sleep(self.period_s)

    def ensure_running(self) -> None:
        """Start `run` as a task of the running loop unless it runs already (the agent
        serves with its lifespan off, so the router starts it on first use). The task
        ends with the loop; if it ever fails, the failure is logged (``ui.history_failed``)
        and the next call starts it again."""
        task = self._task
        if task is not None and not task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self.run(), name="ui-history")
        self._task.add_done_callback(_log_failure)

    def stop(self) -> None:
        """Cancel the sampling task (if any)."""
        if self._task is not None:
            self._task.cancel()

    def to_json(self, *, since_s: float | None = None, after_seq: int = 0) -> dict[str, Any]:
        """``GET /ui/api/history``: the points newer than ``since_s`` and the log entries
        after sequence number ``after_seq`` (both: everything kept, when not given)."""
        points = [p.to_json() for p in self.points if since_s is None or p.at_s > since_s]
        events = [
            {
                "seq": seq,
                "at_s": e.at_s,
                "kind": e.kind,
                "workload_id": e.workload_id,
                "decision_id": e.decision_id,
                "detail": e.detail,
            }
            for seq, e in self.events
            if seq > after_seq
        ]
        return {
            "period_s": self.period_s,
            "keep_s": self.keep_s,
            "points": points,
            "events": events,
            "last_seq": self._seq,
        }


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error(
            "ui.history_failed",
            extra={"error": f"{type(error).__name__}: {error}"},
            exc_info=error,
        )
