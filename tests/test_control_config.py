"""Controller configuration from YAML, and several LC workloads judged each by its SLO."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from corral.control.combine import CombinedSource, LcSignal
from corral.control.config import parse_config, runtime_from_config
from corral.control.controller import Controller, ControllerSettings
from corral.control.probe import Prober
from corral.control.signals import Observation
from corral.control.slo import Slo
from corral.control.top import Mode, TopSettings
from corral.errors import InputError
from corral.topology.cpuset import CpuSet

DOC = """
top: {period_s: 5, high_water: 0.9, low_water: 0.7, cooldown_s: 20}
cores: {shrink_step: 1}
weight: {ladder: [idle, 2]}
memory: {enabled: true, max_bytes: 1073741824}
sub_period_s: 1
workloads:
  - name: cache
    slo: {percentile: 99, target_ms: 1.0, window_s: 10}
    peak_rps: 100000
    latency: {kind: probe, protocol: memcached, port: 11211, rate_hz: 10}
  - name: api
    slo: {target_ms: 50}
    latency: {kind: prometheus, url: "http://127.0.0.1:9/metrics", metric: req_seconds}
  - name: web
    slo: {target_ms: 20}
    latency: {kind: file, path: /tmp/none.json, latency_field: tail_ms}
"""


def test_yaml_sets_every_threshold_and_builds_each_kind_of_source() -> None:
    config = parse_config(yaml.safe_load(DOC))
    s = config.settings
    assert s.top.high_water == 0.9 and s.top.cooldown_s == 20.0
    assert s.cores.shrink_step == 1
    assert s.weight.ladder == ("idle", "2")  # YAML's number 2 read as the rung "2"
    assert s.memory.enabled and s.memory.max_bytes == 1 << 30
    signals, probers = config.signals()
    assert [x.name for x in signals] == ["cache", "api", "web"]
    assert len(probers) == 1 and probers[0].settings.window_s == 10.0  # the SLO window
    assert signals[0].peak_rps == 100_000.0


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"top": {"period": 5}}, "top.period"),
        ({"top": {"period_s": "fast"}}, "top.period_s"),
        ({"evict": {"evict": "yes"}}, "evict.evict"),
        ({"weight": {"ladder": ["idle", "heavy"]}}, "weight.ladder[1]"),
        ({"workloads": []}, "workloads"),
        ({"workloads": [{"name": "x", "latency": {"kind": "smoke"}}]}, "workloads[0].latency.kind"),
        ({"workloads": [{"name": "x", "latency": {"kind": "probe", "protocol": "ftp", "port": 1}}]},
         "workloads[0].latency.protocol"),
        ({"workloads": [{"name": "x", "slo": {"target_ms": -1},
                         "latency": {"kind": "file", "path": "/x"}}]},
         "slo.target_ms"),
        ({"workloads": [{"name": "x", "latency": {"kind": "file", "path": "/x", "wall_clock": 1}}]},
         "workloads[0].latency.wall_clock"),
    ],
)  # fmt: skip
def test_bad_configuration_names_the_field(patch: dict[str, object], field: str) -> None:
    doc = yaml.safe_load(DOC)
    doc.update(patch)
    with pytest.raises(InputError) as err:
        parse_config(doc)
    assert field in str(err.value)


@dataclass
class Fixed:
    obs: Observation

    def read(self, now: float) -> Observation:
        return self.obs


def test_the_lc_workload_with_the_least_slack_and_most_load_rules() -> None:
    source = CombinedSource(
        [
            LcSignal("a", Slo(target_ms=1.0), Fixed(Observation(latency_ms=0.5, load_rps=50)), 100),
            LcSignal(
                "b", Slo(target_ms=50.0), Fixed(Observation(latency_ms=49.0, load_rps=10)), 100
            ),
            LcSignal("c", Slo(target_ms=1.0), Fixed(Observation(latency_ms=9.0, noisy=True))),
        ]
    )
    obs = source.read(0.0)
    assert obs.slack == pytest.approx(0.02)  # b: 49 of 50 ms; c is noisy, left out
    assert obs.load == pytest.approx(0.5)
    assert not obs.noisy
    controller = Controller(
        ControllerSettings(top=TopSettings(period_s=1.0), sub_period_s=1.0),
        (CpuSet([0]), CpuSet([1])),
    )
    state, _ = controller.step(controller.initial(), obs, 0.0)
    assert state.top.mode is Mode.SHRINK  # 2% slack on b, though a has 50%


def test_runtime_from_config_starts_and_stops_its_probers(tmp_path: Path) -> None:
    latency = tmp_path / "lat.json"
    latency.write_text(json.dumps({"p99_ms": 0.3}))
    doc = yaml.safe_load(DOC)
    doc["workloads"] = [
        {
            "name": "p",
            "slo": {"target_ms": 1},
            "latency": {"kind": "probe", "protocol": "tcp", "port": 9},
        },
        {"name": "f", "slo": {"target_ms": 1}, "latency": {"kind": "file", "path": str(latency)}},
    ]

    class Null:
        def apply(self, action: object) -> None:
            pass

    runtime = runtime_from_config(
        parse_config(doc), cores=(CpuSet([0]), CpuSet([1])), actuator=Null()
    )

    async def main() -> None:
        await runtime.start()
        await asyncio.sleep(0.05)
        await runtime.stop()

    asyncio.run(main())
    prober = runtime._services[0]
    assert isinstance(prober, Prober) and prober._task is None
    assert runtime.last_observation.slack == pytest.approx(0.7)
