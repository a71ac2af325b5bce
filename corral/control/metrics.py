"""Prometheus metrics of the colocation controller, computed at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.control.dcat import Category
from corral.control.runtime import Snapshot
from corral.control.signals import SignalStatus
from corral.control.top import Mode


class ControlCollector(Collector):
    """Slack, load, mode, BE cores and weight, frozen workloads, actions taken, each
    latency source's signal health, the loop's failed periods and dCat's per-workload
    ways and categories."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """The metric families for one scrape."""
        snap = self._snapshot()
        if snap.slack is not None:
            yield GaugeMetricFamily(
                "corral_control_slack", "(SLO - measured latency) / SLO.", snap.slack
            )
        if snap.load is not None:
            yield GaugeMetricFamily(
                "corral_control_lc_load", "LC load as a fraction of its peak.", snap.load
            )
        mode = GaugeMetricFamily(
            "corral_control_mode", "1 for the top controller's current mode.", labels=["mode"]
        )
        for m in Mode:
            mode.add_metric([str(m)], 1.0 if snap.mode == str(m) else 0.0)
        yield mode
        yield GaugeMetricFamily(
            "corral_control_be_cores", "Cores the BE box may use.", snap.be_cores
        )
        yield GaugeMetricFamily(
            "corral_control_be_idle", "1 when the BE box runs at cpu.idle.", float(snap.be_idle)
        )
        if snap.be_shares is not None:
            yield GaugeMetricFamily(
                "corral_control_be_shares", "cpu.shares of the BE box.", snap.be_shares
            )
        yield GaugeMetricFamily(
            "corral_control_frozen_workloads", "BE workloads frozen by the controller.", snap.frozen
        )
        yield GaugeMetricFamily(
            "corral_control_crash_loop_held_workloads",
            "BE workloads frozen for an OOM-kill loop (crash-loop back-off).",
            snap.crash_loop_held,
        )
        actions = CounterMetricFamily(
            "corral_control_actions", "Actions applied, by kind.", labels=["kind"]
        )
        for kind, count in sorted(snap.actions.items()):
            actions.add_metric([kind], count)
        yield actions
        yield CounterMetricFamily(
            "corral_control_action_failures", "Actions the kernel refused.", snap.failures
        )
        yield from _signal_metrics(snap)
        yield CounterMetricFamily(
            "corral_control_tick_failures",
            "Control periods that failed with an expected error (retried with backoff).",
            snap.tick_failures,
        )
        yield GaugeMetricFamily(
            "corral_control_tick_consecutive_failures",
            "Control periods in a row that failed; 0 when the last one worked.",
            snap.consecutive_tick_failures,
        )
        yield from _dcat_metrics(snap)


def _dcat_metrics(snap: Snapshot) -> Iterator[Metric]:
    """dCat: whether it runs, each BE workload's written ways and its category."""
    dcat = snap.dcat
    yield GaugeMetricFamily(
        "corral_control_dcat_running",
        "1 when the per-workload cache manager runs (enabled, resctrl ways and a signal).",
        float(dcat.running),
    )
    if not dcat.running:
        return
    ways = GaugeMetricFamily(
        "corral_control_dcat_ways",
        "LLC ways written to the BE workload's resctrl group (corral-w-<workload>).",
        labels=["workload"],
    )
    category = GaugeMetricFamily(
        "corral_control_dcat_category",
        "1 for the BE workload's current dCat category.",
        labels=["workload", "category"],
    )
    for w in dcat.workloads:
        if w.ways is not None:
            ways.add_metric([w.workload], w.ways)
        for c in Category:
            category.add_metric([w.workload, str(c)], float(w.category is c))
    yield ways
    yield category
    yield CounterMetricFamily(
        "corral_control_dcat_refused",
        "dCat way allocations the kernel refused (retried the next period).",
        dcat.refused,
    )


def _signal_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Each latency source's health: ok or not, its status, failures, last read time."""
    ok = GaugeMetricFamily(
        "corral_control_signal_ok",
        "1 when the latency source gave a signal last period, 0 when it was slow, failed "
        "or had too few samples (the controller then holds BE).",
        labels=["source"],
    )
    status = GaugeMetricFamily(
        "corral_control_signal_status",
        "1 for the latency source's current signal status.",
        labels=["source", "status"],
    )
    failures = CounterMetricFamily(
        "corral_control_signal_failures",
        "Reads of the latency source that gave no signal.",
        labels=["source"],
    )
    read = GaugeMetricFamily(
        "corral_control_signal_read_seconds",
        "How long the latency source's last read took.",
        labels=["source"],
    )
    for health in snap.signals:
        ok.add_metric([health.source], 1.0 if health.ok else 0.0)
        for value in SignalStatus:
            status.add_metric([health.source, str(value)], float(health.status is value))
        failures.add_metric([health.source], health.failures)
        if health.read_s is not None:
            read.add_metric([health.source], health.read_s)
    yield from (ok, status, failures, read)


def register_metrics(registry: CollectorRegistry, snapshot: Callable[[], Snapshot]) -> None:
    """Register the controller's collector on ``registry``."""
    registry.register(ControlCollector(snapshot))
