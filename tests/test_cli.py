"""The command line as users meet it: a real subprocess of `python -m corral.cli`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from corral.placement.kubelet import take_cpus
from corral.topology.cpuset import CpuSet
from corral.topology.presets import preset

ROOT = Path(__file__).parents[1]


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_topology_json_round_trips_as_a_topology_file(tmp_path: Path) -> None:
    out = corral("topology", "--source", "epyc-7742-2s", "--json")
    assert out.returncode == 0, out.stderr
    (tmp_path / "t.json").write_text(out.stdout)
    again = corral("topology", "--source", str(tmp_path / "t.json"), "--json")
    assert json.loads(again.stdout)["cpus"] == json.loads(out.stdout)["cpus"]


def test_topology_picture_names_sockets_nodes_and_l3_groups() -> None:
    out = corral("topology", "--source", "xeon-gold-6230-2s")
    assert out.returncode == 0, out.stderr
    for text in ("socket 1", "NUMA node 3", "L3 1", "4 NUMA node(s)"):
        assert text in out.stdout


def test_place_one_request_prints_the_kubelet_cpuset() -> None:
    out = corral(
        "place",
        "--topology",
        "xeon-gold-6230-2s",
        "--request",
        "26",
        "--strategy",
        "distributed",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"cpuset": "0-6,10-16,40-45,50-55"}


def test_place_refusal_exits_non_zero_with_kubelets_message() -> None:
    out = corral("place", "--topology", "toy-16", "--request", "6", "--available", "0-3")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "not enough cpus available to satisfy request: requested=6, available=4"
    )


def test_place_workload_list_json_has_assignments_pools_and_time() -> None:
    out = corral(
        "place", "--topology", "epyc-7742-2s", "--workloads", "examples/workloads.yaml", "--json"
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    topo = preset("epyc-7742-2s")
    fixed = CpuSet([0, 128])
    assert doc["assignments"]["search-rpc"] == str(take_cpus(topo, topo.all_cpus - fixed, 24))
    assert set(doc["pools"]) >= {"shared", "exclusive", "numa-0"}
    assert doc["solve_ms"] > 0
    assert doc["refusals"] == {}


def test_place_workload_list_draws_a_cpu_map() -> None:
    out = corral("place", "--topology", "toy-16", "--workloads", "examples/workloads-small.yaml")
    assert out.returncode == 0, out.stderr
    assert "NUMA 0" in out.stdout and "[A" in out.stdout and "legend" in out.stdout


def test_bad_input_is_one_clear_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("workloads:\n  - {id: web, cpus: 2.5, policy: exclusive}\n")
    out = corral("place", "--topology", "toy-16", "--workloads", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "workloads[0].cpus: an exclusive workload needs a whole number" in out.stderr
    out = corral("place", "--topology", "toy-16", "--request", "2", "--available", "3-1")
    assert out.returncode == 2 and "--available: reversed range" in out.stderr
    out = corral("topology", "--source", "no-such-thing")
    assert out.returncode == 2 and "presets:" in out.stderr
