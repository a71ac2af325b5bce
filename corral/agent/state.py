"""The agent's durable state: SQLite in WAL mode.

Tables: ``workloads`` (spec, status, revision), ``assignments`` (the current placement),
``decisions`` and ``events`` (the event log), ``usage`` (downsampled CPU use for the
predictor) and ``meta`` (the topology the assignment was made for).

Durability: every write that an HTTP reply acknowledges is committed before the reply.
WAL with ``synchronous=NORMAL`` puts each commit into the WAL file with write(2) before
the call returns, so it survives ``kill -9`` of the agent (the kernel keeps the pages);
only a power loss can take the last commits, and then the containers are gone as well.
Set ``synchronous_full=True`` to fsync every commit anyway.

Revisions: every accepted workload write gets a new, increasing revision. A decision
that finished computing after a newer write arrived updates rows only where the revision
is the one it decided on, so it never overwrites a newer acknowledged spec.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from corral.errors import CorralError, InputError
from corral.placement.assignment import Assignment
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workloads (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    revision INTEGER NOT NULL,
    created_s REAL NOT NULL,
    updated_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    workload_id TEXT PRIMARY KEY,
    cpuset TEXT NOT NULL,
    reason TEXT NOT NULL,
    decision_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_s REAL NOT NULL,
    trigger TEXT NOT NULL,
    events INTEGER NOT NULL,
    workloads INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    allocator TEXT NOT NULL,
    moves INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_s REAL NOT NULL,
    kind TEXT NOT NULL,
    workload_id TEXT,
    decision_id INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS usage (
    workload_id TEXT NOT NULL,
    timestamp_s REAL NOT NULL,
    usage_cores REAL NOT NULL,
    capacity_cores REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_workload ON usage (workload_id, timestamp_s);
"""


class StateError(CorralError):
    """The state database cannot be opened or is not corral's."""


class Status(StrEnum):
    """Where a stored workload stands."""

    PENDING = "pending"  # stored, waiting for the next decision
    PLACED = "placed"  # has an assignment
    REFUSED = "refused"  # stored, but the last decision could not place it (reason says why)


@dataclass(frozen=True, slots=True)
class StoredWorkload:
    """A workload as the store holds it."""

    workload: Workload
    status: Status
    reason: str
    revision: int
    created_s: float
    updated_s: float


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One placement decision, as logged."""

    id: int
    at_s: float
    trigger: str
    events: int
    workloads: int
    duration_ms: float
    allocator: str
    moves: int
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The JSON form of /status."""
        return {
            "id": self.id,
            "at_s": self.at_s,
            "trigger": self.trigger,
            "events": self.events,
            "workloads": self.workloads,
            "duration_ms": round(self.duration_ms, 3),
            "allocator": self.allocator,
            "moves": self.moves,
            **dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One stored usage sample (the predictor's trace format)."""

    workload_id: str
    timestamp_s: float
    usage_cores: float
    capacity_cores: float


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One row of the event log."""

    kind: str
    workload_id: str | None
    detail: str = ""


class StateStore:
    """The agent's SQLite database. Not thread-safe: the agent uses it from its event loop."""

    def __init__(self, path: Path, *, synchronous_full: bool = False) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous_full else 'NORMAL'}")
            self._db.execute("PRAGMA busy_timeout=5000")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                found = self._meta("schema_version")
                if found is None:
                    self._set_meta("schema_version", str(SCHEMA_VERSION))
                elif found != str(SCHEMA_VERSION):
                    raise StateError(
                        f"{path}: state schema version {found}, this corral reads "
                        f"{SCHEMA_VERSION}; move the file away to start afresh"
                    )
        except sqlite3.DatabaseError as err:
            raise StateError(f"{path}: cannot open the state database: {err}") from err
        except OSError as err:
            raise InputError("state_path", f"{path}: {err.strerror or err}") from err

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- meta -----------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def meta(self, key: str) -> str | None:
        """A stored meta value (e.g. ``topology``), or None."""
        return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        """Store a meta value (committed at once)."""
        with self._transaction():
            self._set_meta(key, value)

    # --- workloads ------------------------------------------------------------------
    def max_revision(self) -> int:
        """The highest revision stored (0 for an empty store)."""
        row = self._db.execute("SELECT COALESCE(MAX(revision), 0) FROM workloads").fetchone()
        return int(row[0])

    def load_workloads(self) -> dict[str, StoredWorkload]:
        """Every stored workload by id."""
        rows = self._db.execute(
            "SELECT spec, status, reason, revision, created_s, updated_s FROM workloads"
        ).fetchall()
        out: dict[str, StoredWorkload] = {}
        for spec, status, reason, revision, created, updated in rows:
            workload = Workload.model_validate_json(spec)
            out[workload.id] = StoredWorkload(
                workload, Status(status), reason, int(revision), float(created), float(updated)
            )
        return out

    def put_pending(self, stored: StoredWorkload, *, event: LoggedEvent) -> None:
        """Store a workload as pending (committed), unless a newer revision is stored."""
        with self._transaction():
            self._upsert(stored)
            self._log(stored.updated_s, event, None)

    def _upsert(self, stored: StoredWorkload) -> None:
        self._db.execute(
            "INSERT INTO workloads (id, spec, status, reason, revision, created_s, updated_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "spec = excluded.spec, status = excluded.status, reason = excluded.reason, "
            "revision = excluded.revision, updated_s = excluded.updated_s "
            "WHERE workloads.revision <= excluded.revision",
            (
                stored.workload.id,
                stored.workload.model_dump_json(exclude_none=True),
                stored.status.value,
                stored.reason,
                stored.revision,
                stored.created_s,
                stored.updated_s,
            ),
        )

    # --- assignments and decisions --------------------------------------------------
    def load_assignments(self) -> dict[str, Assignment]:
        """The stored assignment by workload id."""
        rows = self._db.execute("SELECT workload_id, cpuset, reason FROM assignments").fetchall()
        return {wid: Assignment(wid, CpuSet.parse(cpus), reason) for wid, cpus, reason in rows}

    def commit_decision(
        self,
        *,
        at_s: float,
        trigger: str,
        events: Sequence[LoggedEvent],
        workloads: Iterable[StoredWorkload],
        removed: Mapping[str, int],
        assignments: Mapping[str, Assignment],
        duration_ms: float,
        allocator: str,
        moves: int,
        detail: Mapping[str, Any],
        topology_key: str | None = None,
    ) -> DecisionRecord:
        """Write one decision in a single transaction: the workloads it decided on (skipped
        where a newer revision is stored), the removals (``id -> revision`` of the delete),
        the whole new assignment, the decision row and its events."""
        stored = list(workloads)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO decisions (at_s, trigger, events, workloads, duration_ms, "
                "allocator, moves, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    at_s,
                    trigger,
                    len(events),
                    len(stored),
                    duration_ms,
                    allocator,
                    moves,
                    json.dumps(dict(detail)),
                ),
            )
            decision_id = int(cursor.lastrowid or 0)
            for workload_id, revision in removed.items():
                db.execute(
                    "DELETE FROM workloads WHERE id = ? AND revision <= ?", (workload_id, revision)
                )
            for item in stored:
                self._upsert(item)
            db.execute("DELETE FROM assignments")
            db.executemany(
                "INSERT INTO assignments (workload_id, cpuset, reason, decision_id) "
                "VALUES (?, ?, ?, ?)",
                [
                    (a.workload_id, str(a.cpuset), a.reason, decision_id)
                    for a in assignments.values()
                ],
            )
            for event in events:
                self._log(at_s, event, decision_id)
            if topology_key is not None:
                self._set_meta("topology", topology_key)
        return DecisionRecord(
            decision_id,
            at_s,
            trigger,
            len(events),
            len(stored),
            duration_ms,
            allocator,
            moves,
            dict(detail),
        )

    def last_decision(self) -> DecisionRecord | None:
        """The most recent decision, or None."""
        row = self._db.execute(
            "SELECT id, at_s, trigger, events, workloads, duration_ms, allocator, moves, detail "
            "FROM decisions ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return DecisionRecord(
            int(row[0]),
            float(row[1]),
            str(row[2]),
            int(row[3]),
            int(row[4]),
            float(row[5]),
            str(row[6]),
            int(row[7]),
            json.loads(row[8]),
        )

    def decision_count(self) -> int:
        """How many decisions were ever logged in this database."""
        return int(self._db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    # --- event log ------------------------------------------------------------------
    def _log(self, at_s: float, event: LoggedEvent, decision_id: int | None) -> None:
        self._db.execute(
            "INSERT INTO events (at_s, kind, workload_id, decision_id, detail) "
            "VALUES (?, ?, ?, ?, ?)",
            (at_s, event.kind, event.workload_id, decision_id, event.detail),
        )

    def log_events(self, at_s: float, events: Sequence[LoggedEvent]) -> None:
        """Append events that belong to no decision (reconcile, drift, restart)."""
        if not events:
            return
        with self._transaction():
            for event in events:
                self._log(at_s, event, None)

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest events, newest first."""
        rows = self._db.execute(
            "SELECT seq, at_s, kind, workload_id, decision_id, detail FROM events "
            "ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("seq", "at_s", "kind", "workload_id", "decision_id", "detail")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def prune(self, *, keep_events: int, keep_decisions: int, usage_before_s: float) -> None:
        """Bound the log tables and drop usage older than ``usage_before_s``."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?", (keep_events,)
            )
            db.execute(
                "DELETE FROM decisions WHERE id <= (SELECT MAX(id) FROM decisions) - ?",
                (keep_decisions,),
            )
            db.execute("DELETE FROM usage WHERE timestamp_s < ?", (usage_before_s,))

    # --- usage ----------------------------------------------------------------------
    def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Store downsampled usage rows."""
        if not rows:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO usage (workload_id, timestamp_s, usage_cores, capacity_cores) "
                "VALUES (?, ?, ?, ?)",
                [(r.workload_id, r.timestamp_s, r.usage_cores, r.capacity_cores) for r in rows],
            )

    def usage_of(self, workload_id: str, *, since_s: float = 0.0) -> list[UsageRow]:
        """Stored usage of one workload, oldest first."""
        rows = self._db.execute(
            "SELECT workload_id, timestamp_s, usage_cores, capacity_cores FROM usage "
            "WHERE workload_id = ? AND timestamp_s >= ? ORDER BY timestamp_s",
            (workload_id, since_s),
        ).fetchall()
        return [UsageRow(str(w), float(t), float(u), float(c)) for w, t, u, c in rows]
