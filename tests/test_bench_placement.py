"""A smoke run of the placement benchmark on a tiny configuration, and its CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from corral.bench.placement import PlacementBenchConfig, run_placement_bench
from corral.cli import app


def _tiny() -> PlacementBenchConfig:
    return PlacementBenchConfig(
        presets=("toy-16",),
        fills=(0.5, 0.95),
        instances=2,
        churn_presets=("toy-16",),
        events=8,
        burst_preset="toy-16",
        burst_size=4,
        solver_preset="toy-16",
        solver_instances=1,
        family_sizes=(64,),
        family_instances=2,
        big_instances=1,
        budget_ms=200,
    )


def test_benchmark_reports_both_allocators_and_optimal_is_never_worse() -> None:
    result = run_placement_bench(_tiny()).to_json()
    assert [row["fill"] for row in result["static"]] == [0.5, 0.95]
    for row in result["static"]:
        assert row["optimal_worse_in_priority_order"] == 0
        assert row["optimal"]["refused"] <= row["greedy"]["refused"]
        assert row["optimal"]["instances"] == 2
        assert set(row["greedy"]["terms"]) == set(row["optimal"]["terms"])
    assert {row["allocator"] for row in result["churn"]} == {"greedy", "optimal"}
    for row in result["churn"]:
        assert row["events"] > 0
        assert row["ms_p50"] is not None
    assert result["burst"]["adds"] > 0
    assert set(result["solvers"]) >= {"highspy", "scipy"}
    assert [row["threads"] for row in result["family"]] == [64, 512]
    for row in result["family"]:
        assert row["proven_share"] == 1.0
        assert row["cross_socket"] == row["cross_socket_unavoidable"] == 0
        assert row["shared_cores"] == row["shared_cores_bound"]
        assert row["worse_than_greedy"] == 0
        assert row["ms_p50"] is not None and row["ms_p99"] is not None
    for row in result["churn"]:
        if row["allocator"] == "optimal":
            assert row["events_worse_than_from_scratch"] == 0


def test_bench_placement_family_only_draws_the_plot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plot = tmp_path / "family.png"
    result = CliRunner().invoke(
        app, ["bench", "placement", "--quick", "--family-only", "--json", "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["static"] == [] and doc["churn"] == []
    assert [row["threads"] for row in doc["family"]] == [64, 128, 256, 512]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_placement_cli_prints_json_and_tables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench.json"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "bench",
            "placement",
            "--quick",
            "--json",
            "--preset",
            "toy-16",
            "--instances",
            "1",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["static"][0]["preset"] == "toy-16"
    assert json.loads(out.read_text()) == doc
    bad = runner.invoke(app, ["bench", "placement", "--preset", "nope"])
    assert bad.exit_code == 2
    assert "unknown preset" in bad.output
