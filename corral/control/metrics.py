"""Prometheus metrics of the colocation controller, computed at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.control.runtime import Snapshot
from corral.control.top import Mode


class ControlCollector(Collector):
    """Slack, load, mode, BE cores and weight, frozen workloads and actions taken."""

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
        actions = CounterMetricFamily(
            "corral_control_actions", "Actions applied, by kind.", labels=["kind"]
        )
        for kind, count in sorted(snap.actions.items()):
            actions.add_metric([kind], count)
        yield actions
        yield CounterMetricFamily(
            "corral_control_action_failures", "Actions the kernel refused.", snap.failures
        )


def register_metrics(registry: CollectorRegistry, snapshot: Callable[[], Snapshot]) -> None:
    """Register the controller's collector on ``registry``."""
    registry.register(ControlCollector(snapshot))
