"""The real agent with a latency source that answers after 3 s: the agent's event loop
never waits for it (/healthz stays fast for 20 s) and the controller reports the source
as slow and holds BE, instead of stalling or reading the silence as an SLO breach; and
with a probe target that is down, a failed signal instead of a made-up breach."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.bench.agent_process import AgentProcess
from tests.latency_servers import dead_port, slow_prometheus

WATCH_S = 20.0
POLL_S = 0.1
HEALTHZ_LIMIT_S = 0.5


def _control(url: str) -> dict[str, Any]:
    return {
        "top": {"period_s": 0.5, "cooldown_s": 1.0},
        "sub_period_s": 0.5,
        "workloads": [
            {
                "name": "api",
                "slo": {"percentile": 99, "target_ms": 5.0, "window_s": 1.0},
                "peak_rps": 1000,
                "latency": {
                    "kind": "prometheus",
                    "url": url,
                    "metric": "rpc_latency_seconds",
                    "timeout_s": 1,
                },
            }
        ],
    }


def _control_status(http: httpx.Client) -> dict[str, Any]:
    control: dict[str, Any] = http.get("/status").json()["control"]
    return control


@pytest.mark.slow
def test_a_latency_source_answering_after_3_s_never_stalls_the_agent(tmp_path: Path) -> None:
    with (
        slow_prometheus(3.0) as endpoint,
        AgentProcess(
            tmp_path / "agent",
            {"control": _control(endpoint.url)},
            extra_args=("--dry-run", "--topology", "toy-16"),
        ) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as http,
    ):
        put = http.put("/workloads/batch?wait=true", json={"qos": "BE", "cpus": 1})
        assert put.status_code == 201, put.text
        worst = 0.0
        slowest_at = 0.0
        deadline = time.monotonic() + WATCH_S
        polls = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = http.get("/healthz")
            took = time.monotonic() - started
            assert response.status_code == 200
            polls += 1
            if took > worst:
                worst, slowest_at = took, started
            time.sleep(POLL_S)
        scrapes = endpoint.requests
        control = _control_status(http)
        metrics = http.get("/metrics").text
        assert agent.terminate() == 0
    print(f"\n/healthz over {polls} polls with a 3 s source: worst {worst * 1000:.1f} ms")
    assert polls >= 100  # about 20 s of polling every 100 ms
    assert scrapes >= 5  # the controller kept trying the slow source throughout
    assert worst < HEALTHZ_LIMIT_S, f"/healthz took {worst:.3f} s at {slowest_at:.1f}"
    api = control["signals"][0]
    assert api["source"] == "api" and api["status"] == "slow", api
    assert api["reason"] == "no answer within 1.0 s"
    assert api["consecutive_failures"] >= 5
    assert control["mode"] == "hold"
    assert control["reason"] == "no signal: api: no answer within 1.0 s"
    assert control["lc"][0]["signal"] == "slow"
    assert control["loop"]["failures"] == 0
    assert 'corral_control_signal_ok{source="api"} 0.0' in metrics
    assert 'corral_control_signal_status{source="api",status="slow"} 1.0' in metrics


@pytest.mark.slow
def test_a_dead_probe_target_is_a_failed_signal_not_an_slo_breach(tmp_path: Path) -> None:
    """The measured bug: memcached down read as a 1000 ms sentinel, slack -999, BE disabled
    and frozen within 30 s. Now the probe failures are a failed signal and BE is held."""
    control = {
        "top": {"period_s": 0.2, "cooldown_s": 1.0},
        "sub_period_s": 0.2,
        "evict": {"freeze_after_periods": 0},
        "workloads": [
            {
                "name": "memcached",
                "slo": {"target_ms": 1.0, "window_s": 1.0},
                "latency": {
                    "kind": "probe",
                    "protocol": "memcached",
                    "port": dead_port(),
                    "rate_hz": 50,
                    "timeout_s": 0.1,
                },
            }
        ],
    }
    with (
        AgentProcess(
            tmp_path / "agent",
            {"control": control},
            extra_args=("--dry-run", "--topology", "toy-16"),
        ) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as http,
    ):
        put = http.put("/workloads/batch?wait=true", json={"qos": "BE", "cpus": 1})
        assert put.status_code == 201, put.text
        deadline = time.monotonic() + 20
        while True:
            control_doc = _control_status(http)
            signals = control_doc["signals"]
            if signals and signals[0]["status"] == "failed" and signals[0]["failures"] >= 10:
                break
            assert time.monotonic() < deadline, f"the probe never failed: {control_doc}"
            time.sleep(0.1)
        assert agent.terminate() == 0
    assert control_doc["mode"] == "hold"
    assert control_doc["reason"].startswith("no signal: memcached: ")
    assert "probes of 127.0.0.1:" in signals[0]["reason"]
    assert control_doc["slack"] is None and control_doc["frozen"] == []
    assert control_doc["lc"][0]["latency_ms"] is None  # no made-up 1000 ms
    assert not [r for r in control_doc["recent"] if r["kind"] == "Freeze"]
