"""Prometheus metrics of the agent, on a registry passed in.

Counters and the histogram are fed through the `Observer` calls; gauges (workloads by QoS
and status, event queue depth) are computed at scrape time from a snapshot function, so
they can never disagree with the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.agent.faults import Task
from corral.agent.sampler import Coverage


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the gauges show at one scrape."""

    workloads: Mapping[tuple[str, str], int]  # (qos, status) -> count
    queue_depth: int
    drift_outstanding: int
    faults: Mapping[str, int] = field(default_factory=dict)  # task -> failures in a row
    effects_depth: int = 0
    usage: Mapping[str, int] = field(default_factory=dict)  # coverage state -> workloads


class _GaugeCollector(Collector):
    def __init__(self, snapshot: Callable[[], Gauges]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        gauges = self._snapshot()
        workloads = GaugeMetricFamily(
            "corral_workloads", "Workloads the agent manages.", labels=["qos", "status"]
        )
        for (qos, status), count in sorted(gauges.workloads.items()):
            workloads.add_metric([qos, status], count)
        yield workloads
        yield GaugeMetricFamily(
            "corral_event_queue_depth", "Events waiting for a decision.", gauges.queue_depth
        )
        yield GaugeMetricFamily(
            "corral_drift_outstanding",
            "Files found drifted by the last reconcile and not repaired.",
            gauges.drift_outstanding,
        )
        yield GaugeMetricFamily(
            "corral_effects_queue_depth",
            "Kernel and database writes queued on the effect executor.",
            gauges.effects_depth,
        )
        usage = GaugeMetricFamily(
            "corral_usage_workloads",
            "Placed workloads by usage sampling state (no-data: flagged in /status usage).",
            labels=["state"],
        )
        for state in Coverage:
            usage.add_metric([state.value], gauges.usage.get(state.value, 0))
        yield usage
        faults = GaugeMetricFamily(
            "corral_task_failures_in_a_row",
            "Expected failures in a row of each agent task (0: healthy); see /status faults.",
            labels=["task"],
        )
        for task in Task:
            faults.add_metric([task.value], gauges.faults.get(task.value, 0))
        yield faults


class AgentMetrics:
    """The agent's metrics; implements `corral.agent.observer.Observer`."""

    def __init__(self, registry: CollectorRegistry, snapshot: Callable[[], Gauges]) -> None:
        self._decisions = Counter(
            "corral_placement_decisions",
            "Placement decisions made, by trigger.",
            ["trigger"],
            registry=registry,
        )
        self._duration = Histogram(
            "corral_placement_decision_seconds",
            "Time to compute one placement decision.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self._fallbacks = Counter(
            "corral_solver_fallbacks",
            "Decisions where the solver gave way to greedy.",
            registry=registry,
        )
        self._write_errors = Counter(
            "corral_cgroup_write_errors", "Cgroup writes that failed.", registry=registry
        )
        self._drift_found = Counter(
            "corral_drift_found", "Drifted cgroup files found by reconcile.", registry=registry
        )
        self._drift_repaired = Counter(
            "corral_drift_repaired", "Drifted cgroup files repaired.", registry=registry
        )
        self._moves = Counter(
            "corral_rebalance_moves",
            "Placed workloads given different CPUs by a decision.",
            registry=registry,
        )
        registry.register(_GaugeCollector(snapshot))

    def decision(self, *, trigger: str, duration_s: float, fallback: bool) -> None:
        """Count a decision and observe its duration."""
        self._decisions.labels(trigger=trigger).inc()
        self._duration.observe(duration_s)
        if fallback:
            self._fallbacks.inc()

    def moves(self, count: int) -> None:
        """Count moved workloads."""
        self._moves.inc(count)

    def write_errors(self, count: int) -> None:
        """Count failed cgroup writes."""
        self._write_errors.inc(count)

    def drift(self, *, found: int, repaired: int) -> None:
        """Count drift found and repaired."""
        self._drift_found.inc(found)
        self._drift_repaired.inc(repaired)
