"""The agent's usage predictions: from the usage table in SQLite to placement's predicted_cpus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import corral.agent.decide as agent_decide
from corral.agent.config import settings_from
from corral.agent.predictions import (
    MODEL,
    RECENT_PEAK,
    REQUEST,
    AgentPredictor,
    PredictorSettings,
    predict_workloads,
    with_predictions,
)
from corral.agent.state import StateStore, UsageRow
from corral.bench.agent_process import AgentProcess
from corral.errors import CorralError, InputError
from corral.placement.workload import Workload
from corral.predict.history import UsageHistory
from corral.predict.model import TrainSettings, save_model, train_model
from corral.predict.series import build_trace
from corral.topology.presets import toy_16

NOW = 1_700_000_000.0
MINUTE = 60.0


def _rows(wid: str, usage: list[float], capacity: float, *, end_s: float) -> list[UsageRow]:
    """One 60 s mean per value, the last one at ``end_s``."""
    n = len(usage)
    return [UsageRow(wid, end_s - (n - 1 - k) * MINUTE, u, capacity) for k, u in enumerate(usage)]


def _store(path: Path, rows: list[UsageRow]) -> None:
    store = StateStore(path)
    try:
        store.add_usage(rows)
    finally:
        store.close()


def _two_hours(peak: float) -> list[float]:
    """Two hours of 60 s means: 0.5 cores, with ``peak`` 10 minutes ago and 1.9 before the
    last hour (outside the peak window)."""
    usage = [0.5] * 120
    usage[30] = 1.9
    usage[-10] = peak
    return usage


# --- the pure parts ----------------------------------------------------------------------
def test_without_a_model_the_peak_of_the_last_hour_or_the_request() -> None:
    histories = {
        "old": UsageHistory.of(
            [NOW - (119 - k) * MINUTE for k in range(120)], _two_hours(1.2), 4.0
        ),
        "young": UsageHistory.of([NOW - 600.0, NOW], [3.0, 3.5], 4.0),
        "busy": UsageHistory.of([NOW - (119 - k) * MINUTE for k in range(120)], [9.0] * 120, 2.0),
    }
    requests = {"old": 4.0, "young": 4.0, "busy": 2.0, "new": 1.0}
    got = predict_workloads(None, PredictorSettings(), histories, requests, now_s=NOW)
    assert got["old"].cores == pytest.approx(1.2)  # not 1.9: that was before the hour
    assert got["old"].source == RECENT_PEAK
    assert (got["young"].cores, got["young"].source) == (4.0, REQUEST)
    assert "history too short" in got["young"].reason
    assert (got["busy"].cores, got["busy"].source) == (2.0, RECENT_PEAK)  # clipped to request
    assert (got["new"].cores, got["new"].reason) == (1.0, "no history")
    off = predict_workloads(None, PredictorSettings(enabled=False), histories, requests, now_s=NOW)
    assert {p.source for p in off.values()} == {REQUEST}


def test_a_spec_that_sets_predicted_cpus_keeps_it() -> None:
    mine = Workload(id="mine", cpus=4, predicted_cpus=3.0)
    theirs = Workload(id="theirs", cpus=4)
    out = with_predictions(
        [mine, theirs, Workload(id="other", cpus=1)], {"mine": 1.0, "theirs": 0.5}
    )
    assert [w.predicted_cpus for w in out] == [3.0, 0.5, None]
    assert [w.expected_use for w in out] == [3.0, 0.5, 1.0]


def test_the_agent_decision_hands_predictions_to_the_cost_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[Workload]] = []
    real = agent_decide.decide_placement

    def spy(topology: Any, workloads: list[Workload], *args: Any, **kwargs: Any) -> Any:
        seen.append(list(workloads))
        return real(topology, workloads, *args, **kwargs)

    monkeypatch.setattr(agent_decide, "decide_placement", spy)
    workloads = [Workload(id="a", cpus=4, policy="exclusive"), Workload(id="b", cpus=2)]
    decision = agent_decide.decide(
        toy_16(),
        workloads,
        {},
        allocator="greedy",
        budget_ms=50,
        rebalance=False,
        predicted={"b": 0.25},
    )
    assert set(decision.placement.assignments) == {"a", "b"}
    assert {w.id: w.predicted_cpus for w in seen[0]} == {"a": None, "b": 0.25}


def test_the_config_section_is_checked_by_field(tmp_path: Path) -> None:
    assert settings_from({}).predictor == PredictorSettings()
    with pytest.raises(InputError) as bad:
        settings_from({"predictor": {"refresh_s": 0}})
    assert bad.value.field == "config.predictor.refresh_s"
    with pytest.raises(InputError) as typo:
        settings_from({"predictor": {"modle": "x"}})
    assert typo.value.field == "config.predictor.modle"
    with pytest.raises(InputError, match=r"predictor\.model.*no such model file"):
        AgentPredictor.open(PredictorSettings(model=tmp_path / "none.json"), tmp_path / "s.db")


# --- real SQLite -------------------------------------------------------------------------
def test_predictions_read_the_usage_table_and_refresh_on_schedule(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _store(db, _rows("web", _two_hours(1.5), 4.0, end_s=NOW))
    predictor = AgentPredictor.open(PredictorSettings(refresh_s=60), db)
    workloads = [Workload(id="web", cpus=4), Workload(id="fresh", cpus=2)]
    assert predictor.predicted(workloads, NOW) == {"web": pytest.approx(1.5)}
    _store(db, _rows("web", [3.0], 4.0, end_s=NOW + 30))
    assert predictor.predicted(workloads, NOW + 30) == {"web": pytest.approx(1.5)}  # cached
    assert predictor.predicted(workloads, NOW + 61) == {"web": pytest.approx(3.0)}
    status = predictor.status()
    assert status["workloads"]["fresh"]["source"] == REQUEST
    assert status["workloads"]["web"] == {
        "cores": 3.0,
        "source": RECENT_PEAK,
        "reason": status["workloads"]["web"]["reason"],
    }
    assert status["fallback"] and status["model"] is None
    # A new workload is predicted at once, without waiting for the refresh period.
    grown = [*workloads, Workload(id="late", cpus=1)]
    predictor.predicted(grown, NOW + 62)
    assert "late" in predictor.status()["workloads"]


def test_an_unreadable_database_falls_back_to_the_requests(tmp_path: Path) -> None:
    predictor = AgentPredictor.open(PredictorSettings(), tmp_path / "missing.db")
    assert predictor.predicted([Workload(id="web", cpus=4)], NOW) == {}
    assert predictor.status()["read_errors"] == 1


def _cycle_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    t = NOW - 3 * 86_400 + 300.0 * np.arange(3 * 288)
    share = 0.4 + 0.3 * np.sin(2 * np.pi * t / 86_400) + rng.normal(0, 0.05, (4, t.size))
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "id": f"vm{k}",
                    "timestamp_s": t,
                    "usage_cores": np.clip(share[k], 0, 1) * 4.0,
                    "capacity_cores": 4.0,
                }
            )
            for k in range(4)
        ],
        ignore_index=True,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trace = build_trace(_cycle_frame(), source="synthetic", fmt="corral")
    settings = TrainSettings(rounds=30, num_leaves=7, min_data_in_leaf=20, max_train_rows=3000)
    path = tmp_path_factory.mktemp("model") / "usage-model.json"
    save_model(train_model(trace, settings), path)
    return path


def test_with_a_model_file_the_model_predicts_from_the_agents_60s_means(
    tmp_path: Path, model_file: Path
) -> None:
    db = tmp_path / "state.db"
    _store(db, _rows("web", [1.0 + 0.5 * np.sin(k / 20) for k in range(180)], 4.0, end_s=NOW))
    _store(db, _rows("young", [2.0] * 20, 4.0, end_s=NOW))
    predictor = AgentPredictor.open(PredictorSettings(model=model_file), db)
    predicted = predictor.predicted([Workload(id="web", cpus=4), Workload(id="young", cpus=4)], NOW)
    assert set(predicted) == {"web"}
    assert 0.0 <= predicted["web"] <= 4.0
    status = predictor.status()
    assert status["workloads"]["web"]["source"] == MODEL
    assert status["workloads"]["young"]["source"] == REQUEST
    assert status["quantile"] == 0.95 and status["horizon_s"] == 600


# --- the real agent on loopback ----------------------------------------------------------
@pytest.fixture
def agent_with_history(tmp_path: Path) -> Iterator[AgentProcess]:
    now = time.time()
    _store(tmp_path / "state.db", _rows("web", _two_hours(1.25), 4.0, end_s=now - 5))
    settings = {
        "topology": "toy-16",
        "dry_run": True,
        "coalesce_window_s": 0.05,
        "predictor": {"refresh_s": 3600},
    }
    with AgentProcess(tmp_path, settings) as proc:
        yield proc


def test_the_agent_predicts_from_its_history_and_shows_it_in_status(
    agent_with_history: AgentProcess,
) -> None:
    with httpx.Client(base_url=agent_with_history.url, timeout=30) as http:
        for wid in ("web", "newcomer"):
            put = http.put(f"/workloads/{wid}?wait=true", json={"cpus": 4})
            assert put.status_code == 201, put.text
        predictions = http.get("/status").json()["predictions"]
    assert predictions["model"] is None
    web = predictions["workloads"]["web"]
    assert (web["cores"], web["source"]) == (1.25, RECENT_PEAK)
    newcomer = predictions["workloads"]["newcomer"]
    assert (newcomer["cores"], newcomer["source"]) == (4.0, REQUEST)


def test_the_agent_loads_a_model_file_named_in_its_config(tmp_path: Path, model_file: Path) -> None:
    now = time.time()
    _store(tmp_path / "state.db", _rows("web", _two_hours(1.25), 4.0, end_s=now - 5))
    settings = {
        "topology": "toy-16",
        "dry_run": True,
        "coalesce_window_s": 0.05,
        "predictor": {"model": str(model_file)},
    }
    with (
        AgentProcess(tmp_path, settings) as proc,
        httpx.Client(base_url=proc.url, timeout=30) as http,
    ):
        assert http.put("/workloads/web?wait=true", json={"cpus": 4}).status_code == 201
        predictions = http.get("/status").json()["predictions"]
    assert predictions["model"] == str(model_file)
    web = predictions["workloads"]["web"]
    assert web["source"] == MODEL
    assert 0.0 <= web["cores"] <= 4.0


def test_an_agent_whose_model_file_is_missing_refuses_to_start(tmp_path: Path) -> None:
    settings = {"topology": "toy-16", "dry_run": True, "predictor": {"model": "/nonexistent.json"}}
    proc = AgentProcess(tmp_path, settings)
    with pytest.raises(CorralError, match=r"predictor\.model"):
        proc.start(timeout_s=30)
    proc.kill()
