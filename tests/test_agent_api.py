"""The real agent as a subprocess, driven over HTTP on loopback (dry run, preset topology)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from corral.bench.agent_process import AgentProcess
from corral.cli import app
from corral.topology.cpuset import CpuSet

BASE = {"topology": "r4.16xlarge", "dry_run": True, "coalesce_window_s": 0.1}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess(tmp_path_factory.mktemp("agent"), BASE) as proc:
        yield proc


@pytest.fixture
def http(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, timeout=30) as client:
        yield client
        ids = [item["id"] for item in client.get("/workloads").json()["workloads"]]
        with ThreadPoolExecutor(32) as pool:  # concurrent deletes coalesce into few decisions
            list(pool.map(lambda wid: client.delete(f"/workloads/{wid}"), ids))


def test_put_get_update_delete_round_trip(http: httpx.Client) -> None:
    created = http.put(
        "/workloads/web?wait=true", json={"qos": "LC", "cpus": 4, "policy": "exclusive"}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "placed"
    assert len(CpuSet.parse(body["cpuset"])) == 4

    got = http.get("/workloads/web").json()
    assert got["cpuset"] == body["cpuset"]
    assert got["spec"]["qos"] == "LC"

    updated = http.put(
        "/workloads/web?wait=true", json={"qos": "LC", "cpus": 6, "policy": "exclusive"}
    )
    assert updated.status_code == 200
    assert len(CpuSet.parse(updated.json()["cpuset"])) == 6

    assignments = http.get("/assignments").json()
    assert assignments["assignments"]["web"] == updated.json()["cpuset"]

    assert http.delete("/workloads/web").status_code == 204
    assert http.get("/workloads/web").status_code == 404
    assert "web" not in http.get("/assignments").json()["assignments"]


def test_put_without_wait_is_acknowledged_as_queued_then_placed(http: httpx.Client) -> None:
    queued = http.put("/workloads/batch", json={"qos": "BE", "cpus": 2})
    assert queued.status_code == 202
    assert queued.json()["status"] == "pending"
    placed = http.put("/workloads/later?wait=true", json={"cpus": 1})
    assert placed.status_code == 201
    assert http.get("/workloads/batch").json()["status"] == "placed"


def test_a_queued_workload_is_visible_and_removable_before_it_is_placed(
    http: httpx.Client,
) -> None:
    for i in range(20):
        assert http.put(f"/workloads/q{i}", json={"cpus": 1}).status_code == 202
        seen = http.get(f"/workloads/q{i}")
        assert seen.status_code == 200
        assert seen.json()["status"] in ("pending", "placed")
        assert http.delete(f"/workloads/q{i}").status_code == 204
        assert http.get(f"/workloads/q{i}").status_code == 404


def test_invalid_body_is_a_422_naming_the_field(http: httpx.Client) -> None:
    cases = {
        "qos": {"qos": "gold", "cpus": 1},
        "cpus": {"cpus": -1},
        "body.colour": {"cpus": 1, "colour": "red"},
        "cpuset": {"cpus": 2, "policy": "immovable"},
    }
    for field, body in cases.items():
        response = http.put("/workloads/x?wait=true", json=body)
        assert response.status_code == 422, response.text
        assert field in response.json()["field"], response.json()
    not_json = http.put(
        "/workloads/x", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["field"] == "body"
    mismatch = http.put("/workloads/x", json={"id": "y", "cpus": 1})
    assert mismatch.status_code == 422
    assert mismatch.json()["field"] == "id"
    bad_id = http.put("/workloads/-bad", json={"cpus": 1})
    assert bad_id.status_code == 422
    assert bad_id.json()["field"] == "body.id"
    assert http.get("/workloads/x").status_code == 404


def test_unknown_id_is_a_404(http: httpx.Client) -> None:
    assert http.get("/workloads/ghost").status_code == 404
    assert http.delete("/workloads/ghost").status_code == 404


def test_exclusive_overcommit_is_a_409_and_stores_nothing(http: httpx.Client) -> None:
    assert (
        http.put("/workloads/a?wait=true", json={"cpus": 40, "policy": "exclusive"}).status_code
        == 201
    )
    before = http.get("/assignments").json()
    for wait in ("true", "false"):
        refused = http.put(f"/workloads/b?wait={wait}", json={"cpus": 30, "policy": "exclusive"})
        assert refused.status_code == 409, refused.text
        assert "exclusive" in refused.json()["detail"]
        assert http.get("/workloads/b").status_code == 404
    # An update that cannot fit leaves the old spec in place.
    grown = http.put("/workloads/a?wait=true", json={"cpus": 70, "policy": "exclusive"})
    assert grown.status_code == 409
    assert http.get("/workloads/a").json()["spec"]["cpus"] == 40
    assert http.get("/assignments").json() == before


def test_a_burst_of_200_workloads_becomes_few_decisions(http: httpx.Client) -> None:
    start = http.get("/status").json()["decisions_total"]

    def put(i: int) -> int:
        body = {"cpus": 1, "policy": "exclusive"} if i < 40 else {"cpus": 0.5, "qos": "BE"}
        return http.put(f"/workloads/burst-{i}", json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(put, range(200)))
    assert codes == [202] * 200
    settled = http.put("/workloads/burst-end?wait=true", json={"cpus": 1})
    assert settled.status_code == 201
    decisions = http.get("/status").json()["decisions_total"] - start
    assert 1 <= decisions <= 10, decisions
    items = {w["id"]: w for w in http.get("/workloads").json()["workloads"]}
    assert all(items[f"burst-{i}"]["status"] == "placed" for i in range(200))
    exclusive = [CpuSet.parse(items[f"burst-{i}"]["cpuset"]) for i in range(40)]
    assert len(CpuSet().union(*exclusive)) == 40  # no CPU given twice


def test_concurrent_waiting_puts_share_decisions(http: httpx.Client) -> None:
    start = http.get("/status").json()["decisions_total"]

    def put(i: int) -> int:
        return http.put(
            f"/workloads/w-{i}?wait=true", json={"cpus": 1, "policy": "exclusive"}
        ).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(put, range(40)))
    assert codes == [201] * 40
    assert http.get("/status").json()["decisions_total"] - start < 40


def test_status_metrics_topology_and_rebalance(http: httpx.Client) -> None:
    http.put("/workloads/lc?wait=true", json={"qos": "LC", "cpus": 2, "policy": "exclusive"})
    http.put("/workloads/be?wait=true", json={"qos": "BE", "cpus": 1})
    status = http.get("/status").json()
    assert status["dry_run"] is True
    assert "dry run" in status["enforcer"]
    assert status["last_decision"]["trigger"]
    topo = http.get("/topology").json()
    assert len(topo["cpus"]) == 64
    rebalanced = http.post("/rebalance").json()["decision"]
    assert rebalanced["trigger"] == "rebalance"
    reconciled = http.post("/reconcile").json()
    assert reconciled["found_total"] == 0
    metrics = http.get("/metrics").text
    assert 'corral_workloads{qos="LC",status="placed"} 1.0' in metrics
    assert 'corral_placement_decisions_total{trigger="rebalance"}' in metrics
    assert "corral_event_queue_depth 0.0" in metrics
    assert "corral_placement_decision_seconds_bucket" in metrics
    assert http.get("/openapi.json").json()["paths"]["/workloads/{workload_id}"]["put"]


def test_sigterm_stops_the_agent_cleanly(tmp_path: Path) -> None:
    with AgentProcess(tmp_path, BASE) as proc:
        assert httpx.put(f"{proc.url}/workloads/a", json={"cpus": 1}).status_code == 202
        code = proc.terminate()
    assert code == 0, proc.log_tail()
    assert "agent.stopped" in proc.log_path.read_text()


def test_unix_socket_is_private_and_serves_the_api(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    settings = {**BASE, "listen": None, "unix_socket": str(sock)}
    with AgentProcess(tmp_path, settings):
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://agent") as client:
            assert client.get("/healthz").json() == {"ok": True}
            assert client.put("/workloads/u?wait=true", json={"cpus": 1}).status_code == 201


def test_the_unix_socket_never_replaces_a_file_or_a_live_agents_socket(tmp_path: Path) -> None:
    def agent_on(path: Path, state: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral.cli", "agent", "--unix-socket", str(path),
             "--listen", "127.0.0.1:0",
             "--state", str(tmp_path / state), "--dry-run", "--topology", "toy-16"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    precious = tmp_path / "precious.txt"
    precious.write_text("not a socket")
    refused = agent_on(precious, "a.db")
    assert refused.returncode == 2 and "not a socket" in refused.stderr, refused.stderr
    assert precious.read_text() == "not a socket"
    sock = tmp_path / "agent.sock"
    live = {**BASE, "listen": None, "unix_socket": str(sock)}
    with AgentProcess(tmp_path / "b", live) as first:
        second = agent_on(sock, "c.db")
        assert second.returncode == 2 and "socket of a running process" in second.stderr
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://agent") as client:
            assert client.get("/healthz").status_code == 200  # still the first agent's
        assert first.terminate() == 0
    assert not sock.exists()  # removed by its own agent at exit


def test_a_non_loopback_listener_without_token_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_AGENT_TOKEN"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral.cli",
            "agent",
            "--listen",
            "0.0.0.0:0",
            "--state",
            str(tmp_path / "s.db"),
            "--dry-run",
            "--topology",
            "toy-16",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "token" in result.stderr
    assert "Traceback" not in result.stderr


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _cli(*args: str) -> Ran:
    """Run the CLI in-process (the agent it talks to is the real subprocess)."""
    result = CliRunner().invoke(app, list(args))
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_the_cli_client_adds_lists_rebalances_and_removes(
    agent: AgentProcess, http: httpx.Client, tmp_path: Path
) -> None:
    added = _cli(
        "workloads",
        "add",
        "cli-lc",
        "--cpus",
        "2",
        "--qos",
        "LC",
        "--policy",
        "exclusive",
        "--agent",
        agent.url,
    )
    assert added.returncode == 0, added.stderr
    assert "cli-lc" in added.stdout and "placed" in added.stdout
    file = tmp_path / "w.yaml"
    file.write_text(
        "workloads:\n  - {id: cli-be, cpus: 1}\n  - {id: cli-big, cpus: 500, policy: exclusive}\n"
    )
    from_file = _cli("workloads", "add", "--file", str(file), "--agent", agent.url, "--json")
    assert from_file.returncode == 1  # one refused
    assert "cli-big" in from_file.stdout and "cli-be" in from_file.stdout
    listed = _cli("workloads", "ls", "--agent", agent.url, "--json")
    assert {w["id"] for w in json.loads(listed.stdout)} == {"cli-lc", "cli-be"}
    table = _cli("status", "--agent", agent.url)
    assert table.returncode == 0 and "r4.16xlarge" in table.stdout and "decisions" in table.stdout
    rebalanced = _cli("rebalance", "--agent", agent.url)
    assert rebalanced.returncode == 0 and "decision #" in rebalanced.stdout
    removed = _cli("workloads", "rm", "cli-lc", "cli-be", "--agent", agent.url)
    assert removed.returncode == 0, removed.stderr
    assert http.get("/workloads").json()["workloads"] == []
    missing = _cli("workloads", "rm", "cli-lc", "--agent", agent.url)
    assert (
        missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr
    )
    bad = _cli(
        "workloads", "add", "x", "--cpus", "1.5", "--policy", "exclusive", "--agent", agent.url
    )
    assert bad.returncode == 2 and "cpus" in bad.stderr
    down = _cli("status", "--agent", "http://127.0.0.1:9")
    assert down.returncode == 2 and "no corral agent answers" in down.stderr


def test_periodic_rebalance_and_reconcile_run_by_themselves(tmp_path: Path) -> None:
    settings = {**BASE, "rebalance_period_s": 0.2, "reconcile_period_s": 0.2}
    with AgentProcess(tmp_path, settings) as proc, httpx.Client(base_url=proc.url) as http:
        http.put("/workloads/a?wait=true", json={"cpus": 2, "policy": "exclusive"})
        deadline = time.monotonic() + 10
        metrics = ""
        while time.monotonic() < deadline:
            metrics = http.get("/metrics").text
            status = http.get("/status").json()
            if 'trigger="rebalance"' in metrics and status["drift"]["last_reconcile"]:
                break
            time.sleep(0.1)
        assert 'corral_placement_decisions_total{trigger="rebalance"}' in metrics
        assert status["drift"]["last_reconcile"]["found_total"] == 0
