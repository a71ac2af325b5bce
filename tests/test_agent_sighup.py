"""A real agent process answers SIGHUP by reloading its config file: live settings change
at once, fields that need a restart are named in the log and left alone, and an invalid
file is refused whole while the agent keeps running on the old settings."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from corral.agent.config import load_settings
from corral.agent.reload import LIVE_FIELDS, ReloadOutcome, plan_reload
from corral.bench.agent_process import AgentProcess
from tests.polling import wait_for

_BASE = {"topology": "toy-16", "dry_run": True, "budget_ms": 50.0, "log_level": "INFO"}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    with AgentProcess(tmp_path, dict(_BASE)).start(timeout_s=180) as running:
        yield running


def _write(agent: AgentProcess, **changes: Any) -> None:
    agent.config_path.write_text(yaml.safe_dump({**agent.settings, **changes}))


def _hup_and_wait(agent: AgentProcess, http: httpx.Client) -> dict[str, Any]:
    """Send SIGHUP and return the /status config section once the reload is recorded."""
    before = http.get("/status").json()["config"]["last_reload"]
    agent._process().send_signal(signal.SIGHUP)

    def reloaded() -> dict[str, Any] | None:
        config: dict[str, Any] = http.get("/status").json()["config"]
        last = config["last_reload"]
        return config if last is not None and last != before else None

    result: dict[str, Any] = wait_for("the reload to be recorded", reloaded)
    return result


def _metric(http: httpx.Client, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_sighup_applies_live_settings_without_a_restart(agent: AgentProcess) -> None:
    with httpx.Client(base_url=agent.url, timeout=30) as http:
        assert http.get("/status").json()["solver"]["budget_ms"] == 50.0
        _write(agent, budget_ms=20.0, allocator="greedy", log_level="DEBUG")
        config = _hup_and_wait(agent, http)
        last = config["last_reload"]
        assert last["outcome"] == "applied", last
        assert sorted(last["applied"]) == ["allocator", "budget_ms", "log_level"]
        assert last["restart_needed"] == []
        assert config["path"] == str(agent.config_path)
        solver = http.get("/status").json()["solver"]
        assert solver == {**solver, "budget_ms": 20.0, "allocator": "greedy"}
        # The new allocator decides the next placement.
        http.put("/workloads/web?wait=true", json={"qos": "LC", "cpus": 2, "policy": "exclusive"})
        decision = http.get("/status").json()["last_decision"]
        assert decision["allocator"] == "greedy", decision
        assert _metric(http, "corral_config_last_reload_success") == 1
        assert _metric(http, "corral_config_reloads_total", result="applied") == 1
        assert "agent.reloaded" in agent.log_path.read_text()
    assert agent.proc is not None and agent.proc.poll() is None


def test_sighup_names_each_field_that_needs_a_restart_and_keeps_it(
    agent: AgentProcess, tmp_path: Path
) -> None:
    with httpx.Client(base_url=agent.url, timeout=30) as http:
        _write(
            agent,
            topology="toy-8",
            state_path=str(tmp_path / "other.db"),
            token="s3cret-token",
            budget_ms=30.0,
        )
        config = _hup_and_wait(agent, http)
        last = config["last_reload"]
        assert last["outcome"] == "partial", last
        assert last["applied"] == ["budget_ms"]
        assert sorted(last["restart_needed"]) == ["state_path", "token", "topology"]
        status = http.get("/status").json()
        assert status["topology"]["name"] == "toy-16"  # not changed under the agent
        assert status["solver"]["budget_ms"] == 30.0
    log = agent.log_path.read_text()
    lines = [line for line in log.splitlines() if "agent.reload_needs_restart" in line]
    assert len(lines) == 3, lines
    assert any("field=topology" in line and "restart" in line for line in lines), lines
    assert any("field=state_path" in line for line in lines), lines
    assert not (tmp_path / "other.db").exists()
    assert "s3cret-token" not in log  # a token is never logged


def test_sighup_refuses_an_invalid_config_whole_and_keeps_running(agent: AgentProcess) -> None:
    with httpx.Client(base_url=agent.url, timeout=30) as http:
        # One good live change beside one bad value: nothing of it may be applied.
        _write(agent, budget_ms=10.0, coalesce_window_s=-1)
        config = _hup_and_wait(agent, http)
        last = config["last_reload"]
        assert last["outcome"] == "invalid", last
        assert last["ok"] is False
        assert last["field"].endswith("coalesce_window_s"), last
        assert last["applied"] == []
        assert http.get("/status").json()["solver"]["budget_ms"] == 50.0
        assert _metric(http, "corral_config_last_reload_success") == 0
        assert _metric(http, "corral_config_reloads_total", result="invalid") == 1

        agent.config_path.write_text("listen: [unclosed\n")
        last = _hup_and_wait(agent, http)["last_reload"]
        assert last["outcome"] == "invalid" and "YAML" in last["error"], last

        _write(agent, budget_ms=10.0)  # fixed: the next SIGHUP takes it
        last = _hup_and_wait(agent, http)["last_reload"]
        assert last["outcome"] == "applied", last
        assert http.get("/status").json()["solver"]["budget_ms"] == 10.0
        assert _metric(http, "corral_config_last_reload_success") == 1
        assert http.get("/healthz").json() == {"ok": True}
    refused = [
        line for line in agent.log_path.read_text().splitlines() if "agent.reload_refused" in line
    ]
    assert len(refused) == 2
    assert "coalesce_window_s" in refused[0] and "fix=" in refused[0], refused[0]


def test_a_shorter_period_takes_effect_at_once(agent: AgentProcess) -> None:
    """The reconcile period (30 s) becomes 0.2 s: the wait in progress is re-timed."""
    with httpx.Client(base_url=agent.url, timeout=30) as http:
        assert http.get("/status").json()["drift"]["last_reconcile"] == {}
        _write(agent, reconcile_period_s=0.2)
        assert _hup_and_wait(agent, http)["last_reload"]["applied"] == ["reconcile_period_s"]
        wait_for(
            "a periodic reconcile",
            lambda: http.get("/status").json()["drift"]["last_reconcile"],
            timeout_s=30,
        )


def test_reload_plan_splits_live_fields_from_restart_fields(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"topology": "toy-16", "budget_ms": 50}))
    before = load_settings(path, {}, search=())
    assert before.source is not None and before.source.path == path
    path.write_text(yaml.safe_dump({"topology": "toy-8", "budget_ms": 20, "sample_period_s": 1}))
    plan = plan_reload(before.source.loaded, load_settings(path, {}, search=()))
    assert dict(plan.live) == {"budget_ms": 20.0, "sample_period_s": 1.0}
    assert plan.restart == ("topology",)
    assert plan.outcome is ReloadOutcome.PARTIAL
    same = plan_reload(before.source.loaded, before)
    assert same.outcome is ReloadOutcome.UNCHANGED
    assert {"listen", "state_path", "topology", "control", "token"}.isdisjoint(LIVE_FIELDS)


def test_flags_still_override_the_reloaded_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"budget_ms": 50}))
    before = load_settings(path, {"budget_ms": 5.0}, search=())
    path.write_text(yaml.safe_dump({"budget_ms": 70}))
    assert before.source is not None
    again = load_settings(before.source.given, before.source.overrides, search=())
    assert plan_reload(before.source.loaded, again).outcome is ReloadOutcome.UNCHANGED
