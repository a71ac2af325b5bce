"""The real agent (``python -m corral.cli agent``) at start-up on a faulty state file: a
corrupt, foreign or vanished state and a state held by another agent each end the agent
with exit code 2 and one line on stderr naming the file and the fix, no traceback and no
empty start; an agent killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from corral.bench.agent_process import AgentProcess, free_port

SETTINGS = {"topology": "toy-16", "dry_run": True, "coalesce_window_s": 0.02}


def _agent(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run an agent on ``state`` that is expected to refuse to start."""
    argv = [
        sys.executable,
        "-m",
        "corral.cli",
        "agent",
        "--dry-run",
        "--topology",
        "toy-16",
        "--state",
        str(state),
        "--listen",
        f"127.0.0.1:{free_port()}",
        *extra,
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
    )


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a refused start (and nothing that looks like a crash)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _agent_with_workloads(state_dir: Path, ids: list[str]) -> None:
    """Run an agent on ``state_dir/state.db``, acknowledge ``ids``, stop it cleanly."""
    with AgentProcess(state_dir, SETTINGS).start() as proc, proc.client() as client:
        for wid in ids:
            code, _ = client.put({"id": wid, "cpus": 1}, wait=True)
            assert code in (200, 201)


@pytest.mark.slow
def test_a_corrupt_state_file_stops_the_agent_with_the_fix(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    _agent_with_workloads(tmp_path, ["a", "b"])
    with state.open("r+b") as f:
        f.seek(4096 + 8)
        f.write(b"\xa5" * 256)  # garbage over the first table page's header
    line = _error_line(_agent(state))
    assert str(state) in line
    assert "restore it from a backup" in line
    assert "--reset-state" in line
    assert not list(tmp_path.glob("*.corrupt-*"))  # nothing moved without the flag


@pytest.mark.slow
def test_a_non_sqlite_or_foreign_state_file_stops_the_agent(tmp_path: Path) -> None:
    text = tmp_path / "text.db"
    text.write_text("not a database\n" * 100)
    assert "is not an SQLite database" in _error_line(_agent(text))
    assert text.read_text() == "not a database\n" * 100
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
        db.commit()
    assert "not a corral state file" in _error_line(_agent(foreign))


@pytest.mark.slow
def test_an_unreadable_workload_row_stops_the_agent_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    _agent_with_workloads(tmp_path, ["web"])
    with closing(sqlite3.connect(state)) as db:
        db.execute("UPDATE workloads SET spec = '{\"id\": 7' WHERE id = 'web'")
        db.commit()
    line = _error_line(_agent(state))
    assert "workload row 'web' cannot be read" in line
    assert "--reset-state" in line


@pytest.mark.slow
def test_a_deleted_state_file_is_refused_not_restarted_empty(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    _agent_with_workloads(tmp_path, ["a"])
    state.unlink()
    line = _error_line(_agent(state))
    assert "the state file does not exist, but state.db.lock says database" in line
    assert "--reset-state" in line
    assert not state.exists()


@pytest.mark.slow
def test_a_second_agent_on_the_same_state_exits_naming_the_first(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with AgentProcess(tmp_path, SETTINGS).start() as first:
        line = _error_line(_agent(state))
        assert f"the state is in use by process {first.pid} " in line
        assert str(state) in line
        assert first.proc is not None
        assert first.proc.poll() is None  # the first one is undisturbed


@pytest.mark.slow
def test_an_agent_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    with AgentProcess(tmp_path, SETTINGS).start() as first:
        with first.client() as client:
            assert client.put({"id": "a", "cpus": 1}, wait=True)[0] in (200, 201)
        first.kill()
        assert first.proc is not None
        assert first.proc.returncode == -signal.SIGKILL
    lock = (tmp_path / "state.db.lock").read_text()
    assert f'"pid": {first.pid}' in lock  # the dead holder's record stays, its lock does not
    with AgentProcess(tmp_path, SETTINGS).start() as second, second.client() as client:
        assert [w["id"] for w in client.workloads()] == ["a"]
