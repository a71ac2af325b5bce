"""Prometheus metrics of the agent, on a registry passed in.

Counters and the histogram are fed through the `Observer` calls; gauges (workloads by QoS
and status, event queue depth, the per-workload series: cpuset size, request, sampled
usage, CFS throttling; config reloads) are computed at scrape time from a snapshot
function, so they can never disagree with the state (a removed workload's series are
gone at the next scrape). ``corral_build_info`` is 1 with the versions as labels.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral import __version__
from corral.agent.faults import Task
from corral.agent.sampler import Coverage
from corral.agent.throttling import Throttling

WORKLOAD_LABELS = ("workload", "qos", "policy")
"""Labels of every per-workload series; a workload's series go when it is removed."""
BUILD_PACKAGES = ("highspy", "numpy", "scipy", "fastapi", "pydantic", "prometheus_client")
"""Libraries whose installed versions label ``corral_build_info``."""


@dataclass(frozen=True, slots=True)
class WorkloadSeries:
    """One placed workload at one scrape: its cpuset size (CPUs), its CPU request
    (cores), its latest sampled usage (cores; None until sampled) and the CFS throttling
    counters of its cgroup (None without a cpu controller or a cgroup)."""

    workload_id: str
    qos: str
    policy: str
    cpus: int
    request_cores: float
    usage_cores: float | None = None
    throttling: Throttling | None = None


@dataclass(frozen=True, slots=True)
class ReloadSeries:
    """What the config reloads (SIGHUP) did so far: reloads by result, and the last
    one's result and time (None: no reload yet)."""

    counts: Mapping[str, int] = field(default_factory=dict)
    last_ok: bool | None = None
    last_at_s: float | None = None


def build_labels() -> dict[str, str]:
    """The labels of ``corral_build_info``: corral's version, Python's, the kernel's and
    each of `BUILD_PACKAGES`' (``none`` when not installed). Reads package metadata
    only: nothing is imported."""
    labels = {
        "version": __version__,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    for name in BUILD_PACKAGES:
        try:
            labels[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            labels[name] = "none"
    return labels


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the gauges show at one scrape."""

    workloads: Mapping[tuple[str, str], int]  # (qos, status) -> count
    queue_depth: int
    drift_outstanding: int
    faults: Mapping[str, int] = field(default_factory=dict)  # task -> failures in a row
    effects_depth: int = 0
    usage: Mapping[str, int] = field(default_factory=dict)  # coverage state -> workloads
    per_workload: Sequence[WorkloadSeries] = ()
    reload: ReloadSeries = field(default_factory=ReloadSeries)


def workload_metrics(series: Sequence[WorkloadSeries]) -> Iterator[Metric]:
    """The per-workload families (every one yielded, empty when no workload has it)."""
    labels = list(WORKLOAD_LABELS)
    cpus = GaugeMetricFamily(
        "corral_workload_cpus", "CPUs in the workload's cpuset.", labels=labels
    )
    request = GaugeMetricFamily(
        "corral_workload_cpu_request_cores", "The workload's CPU request, cores.", labels=labels
    )
    usage = GaugeMetricFamily(
        "corral_workload_cpu_usage_cores",
        "The workload's CPU use over the last sampling period, cores (absent until sampled).",
        labels=labels,
    )
    periods = CounterMetricFamily(
        "corral_workload_cpu_periods",
        "CFS enforcement periods with runnable tasks (cpu.stat nr_periods).",
        labels=labels,
    )
    throttled = CounterMetricFamily(
        "corral_workload_cpu_throttled_periods",
        "CFS periods in which the workload's quota ran out (cpu.stat nr_throttled).",
        labels=labels,
    )
    throttled_s = CounterMetricFamily(
        "corral_workload_cpu_throttled_seconds",
        "Time the workload's tasks spent throttled, s (cpu.stat throttled_time/_usec).",
        labels=labels,
    )
    for one in sorted(series, key=lambda s: s.workload_id):
        values = [one.workload_id, one.qos, one.policy]
        cpus.add_metric(values, one.cpus)
        request.add_metric(values, one.request_cores)
        if one.usage_cores is not None:
            usage.add_metric(values, one.usage_cores)
        if one.throttling is not None:
            periods.add_metric(values, one.throttling.periods)
            throttled.add_metric(values, one.throttling.throttled)
            throttled_s.add_metric(values, one.throttling.throttled_s)
    yield from (cpus, request, usage, periods, throttled, throttled_s)


def reload_metrics(reload: ReloadSeries) -> Iterator[Metric]:
    """``corral_config_reloads_total{result}`` and the last reload's success and time."""
    counts = CounterMetricFamily(
        "corral_config_reloads", "Config reloads (SIGHUP) by result.", labels=["result"]
    )
    for result, count in sorted(reload.counts.items()):
        counts.add_metric([result], count)
    yield counts
    if reload.last_ok is not None:
        yield GaugeMetricFamily(
            "corral_config_last_reload_success",
            "1 when the last config reload was valid (applied, perhaps in part), 0 when "
            "it was refused whole.",
            1 if reload.last_ok else 0,
        )
    if reload.last_at_s is not None:
        yield GaugeMetricFamily(
            "corral_config_last_reload_timestamp_seconds",
            "When the last config reload was tried (Unix time, s).",
            reload.last_at_s,
        )


class _BuildInfo(Collector):
    def __init__(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "corral_build_info",
            "Always 1; the labels say which corral, Python, kernel and libraries run.",
            labels=list(self._labels),
        )
        info.add_metric(list(self._labels.values()), 1)
        yield info


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
        yield from workload_metrics(gauges.per_workload)
        yield from reload_metrics(gauges.reload)


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
        registry.register(_BuildInfo(build_labels()))

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
