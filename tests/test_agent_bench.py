"""The agent benchmark runs end to end and reports every figure it promises."""

from __future__ import annotations

import pytest

from corral.bench.agent import run_agent_bench


@pytest.mark.slow
def test_the_agent_benchmark_reports_throughput_latency_and_idle_cpu() -> None:
    result = run_agent_bench(
        topology="toy-16", allocator="greedy", workloads=10, clients=2, seconds=0.5, idle_s=1.0
    )
    data = result.to_json()
    names = [s["name"] for s in data["scenarios"]]
    assert names[0].startswith("GET /healthz")
    assert any(n.startswith("PUT") for n in names)
    for scenario in data["scenarios"]:
        assert scenario["requests"] > 0
        assert scenario["errors"] == 0
        assert scenario["p99_ms"] >= scenario["p50_ms"] > 0
    assert 0 <= data["idle_cpu_percent_of_one_core"] < 100
    assert any("idle with 10 workloads" in line for line in result.lines())
