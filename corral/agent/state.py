"""The agent's durable state: SQLite in WAL mode, guarded against the faults of its file.

Tables: ``workloads`` (spec, status, revision), ``assignments`` (the current placement),
``decisions`` and ``events`` (the event log), ``usage`` (downsampled CPU use for the
predictor) and ``meta`` (schema version, database id, the topology the assignment was made
for).

Acknowledgement: every write that an HTTP reply acknowledges is committed before the reply.
A write method that returns has committed; one that raises a `StateError` has not (the
transaction is rolled back), except after an I/O error in the middle of a commit, where
SQLite cannot say whether the commit frame reached the file: then the write may be
there after a restart, but it was never acknowledged.

Durability (`Durability`, default ``full``): WAL with ``synchronous=NORMAL`` writes each
commit into the WAL file with write(2) before the call returns, so it survives ``kill -9``
of the agent (the kernel keeps the pages), but a power loss or a file system abort (ext4
``errors=remount-ro``) loses what the kernel had not written back: in a trial here (an ext4
image aborted through ``/sys/fs/ext4/<dev>/trigger_fs_error``) 50 of 50 workloads
acknowledged just before the abort were gone after the remount. ``full``
(``synchronous=FULL``) fsyncs the WAL at every commit and lost none (the same trial, and
the ext4 abort test in tests/test_agent_state_faults.py). Measured on this host (ext4 on
a virtio disk, ``.venv/bin/python -m tests.measure_state_durability``, 300 and
1000 put_pending per run, two runs each): NORMAL median 0.04-0.07 ms per commit, FULL
0.27-0.34 ms (p99 0.5-0.7 ms, one run 5.6 ms). FULL is the default: an acknowledged
workload is a promise the agent keeps across a node failure, and at a third of a
millisecond the fsync is far below the API's latency targets. Choose ``normal`` only on a
disk whose fsync is slow (spinning or network disks take 1-10 ms) when the write rate
matters more than the last seconds of writes. The lock file and the first commit of a new
database are fsynced in both modes, so a crash right after the first start never looks
like a first start.

Faults, each a `StateError` subclass naming the file and the fix; a raw ``sqlite3`` or
``OSError`` never leaves this module:

- `StateLockedError`: another live process holds ``<state>.lock`` (an exclusive
  ``flock`` taken at open; the kernel drops it when the holder dies, even by ``kill -9``).
  The lock file keeps the holder's pid, start time and database id.
- `StateCorruptError`: the file is not a SQLite database, fails ``PRAGMA quick_check``,
  is not corral's (foreign tables), or holds rows corral cannot read. Refused at open with
  the fix: restore a backup, or start fresh with ``--reset-state`` (``reset_corrupt=True``),
  which moves the file and its ``-wal``/``-shm`` aside to ``<state>.corrupt-<UTC time>``.
  Never an empty start in its place. While running, corruption is found by
  `StateStore.check_integrity` (every `StateStore.prune` runs it) or by SQLite itself, and
  writes are refused from then on. `StateMissingError` is the special case of a state
  file that is gone or empty although the lock file says a database lived there.
- `StateUnavailableError`: the disk is full, the file system is read-only, permission is
  denied, an I/O error, or the database stayed busy past the timeout: ``transient`` (the
  store stays usable, the next write succeeds once the cause is gone); or, not transient,
  the state file was deleted or replaced while the store had it open (its identity,
  st_dev/st_ino, is checked before every write): writes are refused from then on, since a
  restart could not read them, and what the open database holds is saved to
  ``<state>.rescued-<UTC time>`` for the operator to move back.
- `StateError` itself: an SQLite error that corral's own statements should never cause
  (a bug, or a file changed under corral by something else).

Threads: one store is used from one thread at a time (the agent's effect executor); an
internal lock serialises calls anyway, so a stray call from another thread waits instead
of corrupting the connection.

Revisions: every accepted workload write gets a new, increasing revision. A decision
that finished computing after a newer write arrived updates rows only where the revision
is the one it decided on, so it never overwrites a newer acknowledged spec.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

from pydantic import ValidationError

from corral.errors import CorralError, InputError
from corral.placement.assignment import Assignment
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet

log = logging.getLogger(__name__)

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


RESET_FLAG = "--reset-state"
"""The agent option that starts fresh after moving a refused state file aside."""

# SQLite result codes (https://www.sqlite.org/rescode.html); extended codes carry the
# primary code in their low byte.
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_NOMEM = 7
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_PROTOCOL = 15
_SQLITE_NOTADB = 26
_SQLITE_READONLY_DBMOVED = _SQLITE_READONLY | (4 << 8)


class StateError(CorralError):
    """The state database cannot be used; raised directly only for an SQLite error that
    corral's own statements should never cause (a bug, or a foreign change to the file)."""


class StateCorruptError(StateError):
    """The state file is not a valid corral database: refused, never emptied."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path}: {problem}; restore it from a backup, or start fresh with {RESET_FLAG}, "
            f"which moves the bad file aside to {path}.corrupt-<timestamp>"
        )


class StateMissingError(StateCorruptError):
    """The state file is gone or empty although its lock file says a database lived there."""


class StateUnavailableError(StateError):
    """The state cannot be written now. ``transient``: the store stays usable and the next
    write succeeds once the cause (``reason``) is gone; not transient: writes are refused
    until the agent restarts (on the fix)."""

    def __init__(self, path: Path, reason: str, *, fix: str, transient: bool) -> None:
        self.path = path
        self.reason = reason
        self.fix = fix
        self.transient = transient
        super().__init__(f"{path}: {reason}; {fix}")


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds (or last held) a state file's lock, as its lock file says."""

    pid: int
    started_s: float
    database_id: str

    def to_json(self) -> dict[str, Any]:
        """The lock file's content."""
        return {"pid": self.pid, "started_s": self.started_s, "database_id": self.database_id}


class StateLockedError(StateError):
    """Another live process has the state open; ``holder`` says which (None: unknown)."""

    def __init__(self, path: Path, holder: LockHolder | None) -> None:
        self.path = path
        self.holder = holder
        if holder is None:
            who = "another process (its lock file names none yet)"
        else:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.started_s))
            who = f"process {holder.pid} (started {started})"
        super().__init__(
            f"{path}: the state is in use by {who}; stop that agent first, or give this one "
            f"another --state"
        )


class Durability(StrEnum):
    """How hard a commit is pushed to the disk (see the module docstring for the costs)."""

    NORMAL = "normal"  # synchronous=NORMAL: survives kill -9, not a power loss or fs abort
    FULL = "full"  # synchronous=FULL: fsync of the WAL at every commit (the default)


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


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    doing: str, *, write: bool
) -> Callable[
    [Callable[Concatenate[StateStore, _P], _R]], Callable[Concatenate[StateStore, _P], _R]
]:
    """Serialise the call, refuse writes once the store failed for good or its file was
    deleted or replaced, and translate sqlite3 and OS errors into `StateError`s."""

    def wrap(
        method: Callable[Concatenate[StateStore, _P], _R],
    ) -> Callable[Concatenate[StateStore, _P], _R]:
        @functools.wraps(method)
        def guarded(self: StateStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            with self._mutex:
                if write:
                    self._check_writable()
                try:
                    return method(self, *args, **kwargs)
                except sqlite3.Error as err:
                    raise self._translate(err, doing) from err

        return guarded

    return wrap


class StateStore:
    """The agent's SQLite database, locked to this process while open."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = Durability.FULL,
        reset_corrupt: bool = False,
        busy_timeout_s: float = 5.0,
    ) -> None:
        """Open (or create) the state at ``path``: take its lock, check the file
        (``quick_check``, corral's schema) and record its identity.

        Raises `StateLockedError` when another process holds it, `StateCorruptError`
        (`StateMissingError`) when the file is refused, `StateUnavailableError` when it
        cannot be opened for writing now. With ``reset_corrupt`` a refused file is moved
        aside (`set_aside`) and the store starts empty, saying so in the log.
        """
        self.path = path
        self.durability = durability
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._mutex = threading.RLock()
        self._failed: Callable[[], StateError] | None = None
        self._closed = False
        self._lock_fd = _acquire_lock(path)
        try:
            previous = _read_holder(self._lock_fd)
            self._db, self.database_id = self._open(previous, reset_corrupt=reset_corrupt)
            try:
                self._identity = self._identities()
                _write_holder(
                    path, self._lock_fd, LockHolder(os.getpid(), time.time(), self.database_id)
                )
            except BaseException:
                self._db.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise

    # --- opening --------------------------------------------------------------------
    def _open(
        self, previous: LockHolder | None, *, reset_corrupt: bool
    ) -> tuple[sqlite3.Connection, str]:
        try:
            return self._open_checked(previous)
        except StateCorruptError as err:
            if not reset_corrupt:
                raise
            moved = _move_aside(self.path)
            log.warning(
                "state.reset",
                extra={
                    "path": str(self.path),
                    "problem": err.problem,
                    "moved_to": [str(p) for p in moved],
                    "previous_database_id": None if previous is None else previous.database_id,
                },
            )
            return self._open_checked(None)

    def _open_checked(self, previous: LockHolder | None) -> tuple[sqlite3.Connection, str]:
        path = self.path
        wal = _sidecar(path, "-wal")
        fresh = _size(path) == 0
        remembered = previous is not None and previous.database_id != ""
        if fresh and (remembered or _size(wal) > 0):
            raise StateMissingError(path, _missing_problem(path, previous, wal))
        try:
            db = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode={'rwc' if fresh else 'rw'}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as err:
            raise self._translate(err, "opening the state database") from err
        try:
            database_id = self._prepare(db, previous, fresh=fresh)
        except BaseException:
            db.close()
            raise
        return db, database_id

    def _prepare(self, db: sqlite3.Connection, previous: LockHolder | None, *, fresh: bool) -> str:
        try:
            db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateUnavailableError(
                    self.path,
                    f"SQLite cannot use WAL mode here (journal_mode stays {mode})",
                    fix="put the state on a local file system",
                    transient=False,
                )
            db.execute(f"PRAGMA synchronous={self.durability.value.upper()}")
            problems = _quick_check(db)
            if problems:
                raise StateCorruptError(
                    self.path, "the database fails its integrity check: " + "; ".join(problems)
                )
            tables = _tables(db)
            if not tables:
                if previous is not None and previous.database_id:
                    raise StateMissingError(self.path, _missing_problem(self.path, previous))
                return self._create(db, fresh=fresh)
            _check_schema(self.path, db, tables)
            return self._database_id(db)
        except sqlite3.Error as err:
            raise self._translate(err, "opening the state database") from err
        except OSError as err:
            raise self._os_error(err, "opening the state database") from err

    def _create(self, db: sqlite3.Connection, *, fresh: bool) -> str:
        database_id = uuid.uuid4().hex
        with _transaction(db):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            _put_meta(db, "schema_version", str(SCHEMA_VERSION))
            _put_meta(db, "database_id", database_id)
        db.execute("PRAGMA wal_checkpoint(FULL)")  # the new database on disk, fsynced
        _fsync_dir(self.path)
        log.info(
            "state.created",
            extra={"path": str(self.path), "database_id": database_id, "new_file": fresh},
        )
        return database_id

    def _database_id(self, db: sqlite3.Connection) -> str:
        found = _get_meta(db, "database_id")
        if found is not None:
            return found
        database_id = uuid.uuid4().hex  # a state file from before database ids
        with _transaction(db):
            _put_meta(db, "database_id", database_id)
        log.info("state.database_id_added", extra={"path": str(self.path), "id": database_id})
        return database_id

    def _identities(self) -> list[tuple[Path, tuple[int, int]]]:
        """(path, (st_dev, st_ino)) of the database, its WAL and the lock file, as opened."""
        try:
            lock = os.fstat(self._lock_fd)
            out = [(_sidecar(self.path, ".lock"), (lock.st_dev, lock.st_ino))]
            for path in (self.path, _sidecar(self.path, "-wal")):
                st = path.stat()
                out.append((path, (st.st_dev, st.st_ino)))
        except OSError as err:
            raise self._os_error(err, "opening the state database") from err
        return out

    # --- health ---------------------------------------------------------------------
    def check_identity(self) -> None:
        """Raise `StateUnavailableError` (not transient) when the state file, its WAL or its
        lock file was deleted or replaced since the store opened them; from then on every
        write is refused. Cheap (three stat calls); every write runs it first."""
        with self._mutex:
            if self._failed is not None:
                raise self._failed()
            for path, (dev, ino) in self._identity:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    self._fail_moved(f"{path.name} was deleted")
                except OSError as err:
                    raise self._os_error(err, "checking the state file") from err
                else:
                    if (st.st_dev, st.st_ino) != (dev, ino):
                        self._fail_moved(f"{path.name} was replaced by another file")

    def check_integrity(self) -> None:
        """Run ``PRAGMA quick_check`` on a fresh connection (it reads the file, not this
        connection's cache); raise `StateCorruptError` and refuse writes from then on when
        it fails. Takes a few milliseconds on a small state; call it periodically."""
        with self._mutex:
            self.check_identity()
            try:
                problems = self._integrity_problems()
            except sqlite3.Error as err:
                raise self._translate(err, "checking the state database") from err
            if problems:
                self._fail_corrupt("the database fails its integrity check: " + "; ".join(problems))

    def _integrity_problems(self) -> list[str]:
        check = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            check.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            return _quick_check(check)
        finally:
            check.close()

    @property
    def failure(self) -> StateError | None:
        """Why writes are refused for good (a deleted, replaced or corrupt file), or None."""
        return None if self._failed is None else self._failed()

    def _check_writable(self) -> None:
        if self._closed:
            raise StateError(f"{self.path}: the state store is closed (a bug in the caller)")
        self.check_identity()

    def _fail_moved(self, what: str) -> NoReturn:
        raise self._moved(what)

    def _moved(self, what: str) -> StateError:
        """The error of a state file deleted or replaced under the store; refuses writes.
        Saves what the open database holds to ``<path>.rescued-<UTC time>`` first (once,
        best effort) and names that copy in the fix."""
        path = self.path
        rescued = self._rescue()
        if rescued is not None:
            fix = (
                f"everything acknowledged so far was saved to {rescued}: stop the agent, "
                f"move that file to {path}, and start it again"
            )
        else:
            fix = (
                "stop the agent and restore the state from a backup, or start fresh with "
                f"{RESET_FLAG}"
            )
        log.error("state.moved", extra={"path": str(path), "what": what, "rescued": str(rescued)})

        def error() -> StateError:
            return StateUnavailableError(
                path,
                f"the state file was deleted or replaced while the agent ran ({what}); "
                "writes are refused, since a restart could not read them",
                fix=fix,
                transient=False,
            )

        self._failed = error
        return error()

    def _rescue(self) -> Path | None:
        """A consistent copy of the open database next to the state path, or None."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = _sidecar(self.path, f".rescued-{stamp}")
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.execute("VACUUM INTO ?", (str(target),))
        except sqlite3.Error as err:
            log.warning("state.rescue_failed", extra={"path": str(target), "error": str(err)})
            return None
        return target

    def _fail_corrupt(self, problem: str) -> NoReturn:
        raise self._corrupt(problem)

    def _corrupt(self, problem: str) -> StateError:
        """The error of a file found corrupt while running; refuses writes from now on."""
        path = self.path

        def error() -> StateError:
            return StateCorruptError(path, problem + "; writes are refused")

        self._failed = error
        return error()

    # --- error translation ----------------------------------------------------------
    def _translate(self, err: sqlite3.Error, doing: str) -> StateError:
        """The `StateError` for an sqlite3 error met while ``doing``."""
        code: int | None = getattr(err, "sqlite_errorcode", None)
        name = getattr(err, "sqlite_errorname", None) or type(err).__name__
        primary = None if code is None else code & 0xFF
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            what = "is not an SQLite database" if primary == _SQLITE_NOTADB else "is malformed"
            problem = f"the file {what} ({name} while {doing})"
            if self._has_db():  # found while running, not at open
                return self._corrupt(problem)
            return StateCorruptError(self.path, problem)
        if code == _SQLITE_READONLY_DBMOVED:
            return self._moved("SQLite reports SQLITE_READONLY_DBMOVED")
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StateUnavailableError(
                self.path,
                f"the database stayed locked by another connection for "
                f"{self._busy_timeout_ms} ms ({name}) while {doing}",
                fix="stop the other program that has the state file open (an sqlite3 shell?)",
                transient=True,
            )
        if primary in (
            _SQLITE_FULL,
            _SQLITE_READONLY,
            _SQLITE_IOERR,
            _SQLITE_CANTOPEN,
            _SQLITE_PERM,
            _SQLITE_NOMEM,
            _SQLITE_PROTOCOL,
        ):
            found = _diagnose(self.path.parent)
            if found is None and primary == _SQLITE_FULL:
                found = ("the file system is full", _FIX_FULL)
            if found is None and primary == _SQLITE_IOERR and self._has_db():
                corrupt = self._corrupt_after_io_error()
                if corrupt is not None:
                    return corrupt
            if found is None:
                found = (f"SQLite reports {name} ({err})", "check the disk (dmesg) and retry")
            reason, fix = found
            return StateUnavailableError(
                self.path, f"{reason} ({name} while {doing})", fix=fix, transient=True
            )
        return StateError(f"{self.path}: unexpected SQLite error while {doing}: {name}: {err}")

    def _corrupt_after_io_error(self) -> StateError | None:
        """An I/O error the file system does not explain: is the file damaged?"""
        try:
            problems = self._integrity_problems()
        except sqlite3.Error as err:
            code = getattr(err, "sqlite_errorcode", 0) & 0xFF
            if code not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                return None
            problems = [str(err)]
        if not problems:
            return None
        return self._corrupt("the database fails its integrity check: " + "; ".join(problems))

    def _os_error(self, err: OSError, doing: str) -> StateError:
        reason, fix = _os_reason(err, self.path.parent)
        return StateUnavailableError(self.path, f"{reason} while {doing}", fix=fix, transient=True)

    def _has_db(self) -> bool:
        return hasattr(self, "_db")

    # --- closing and setting aside --------------------------------------------------
    def close(self) -> None:
        """Checkpoint the WAL, close the database and release the lock. Never raises for a
        checkpoint that fails (the WAL keeps the commits); closing twice is harmless."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as err:
                log.warning(
                    "state.checkpoint_failed", extra={"path": str(self.path), "error": str(err)}
                )
            finally:
                self._db.close()
                os.close(self._lock_fd)

    @staticmethod
    def set_aside(path: Path) -> list[Path]:
        """Move the state file at ``path`` and its ``-wal``/``-shm`` to
        ``<path>.corrupt-<UTC time>[-wal|-shm]`` under its lock, so that the next open
        starts empty; the moved files, the database first (empty when there was nothing).
        `StateLockedError` when a live process holds the state."""
        fd = _acquire_lock(path)
        try:
            moved = _move_aside(path)
            os.ftruncate(fd, 0)  # forget the database id: the next open is a first start
        except OSError as err:
            reason, fix = _os_reason(err, path.parent)
            raise StateUnavailableError(
                path, f"cannot reset the lock file: {reason}", fix=fix, transient=True
            ) from err
        finally:
            os.close(fd)
        log.warning(
            "state.set_aside", extra={"path": str(path), "moved_to": [str(p) for p in moved]}
        )
        return moved

    # --- meta -----------------------------------------------------------------------
    @_guarded("reading meta", write=False)
    def meta(self, key: str) -> str | None:
        """A stored meta value (e.g. ``topology``), or None."""
        return _get_meta(self._db, key)

    @_guarded("storing meta", write=True)
    def set_meta(self, key: str, value: str) -> None:
        """Store a meta value (committed at once)."""
        with _transaction(self._db):
            _put_meta(self._db, key, value)

    # --- workloads ------------------------------------------------------------------
    @_guarded("reading the workloads", write=False)
    def max_revision(self) -> int:
        """The highest revision stored (0 for an empty store)."""
        row = self._db.execute("SELECT COALESCE(MAX(revision), 0) FROM workloads").fetchone()
        return int(row[0])

    @_guarded("reading the workloads", write=False)
    def load_workloads(self) -> dict[str, StoredWorkload]:
        """Every stored workload by id; `StateCorruptError` naming the row when one does
        not parse (its text was changed under corral)."""
        rows = self._db.execute(
            "SELECT id, spec, status, reason, revision, created_s, updated_s FROM workloads"
        ).fetchall()
        out: dict[str, StoredWorkload] = {}
        for wid, spec, status, reason, revision, created, updated in rows:
            try:
                workload = Workload.model_validate_json(spec)
                out[workload.id] = StoredWorkload(
                    workload, Status(status), reason, int(revision), float(created), float(updated)
                )
            except (ValidationError, ValueError, TypeError) as err:
                self._fail_corrupt(f"workload row {wid!r} cannot be read: {_first_line(err)}")
        return out

    @_guarded("storing a pending workload", write=True)
    def put_pending(self, stored: StoredWorkload, *, event: LoggedEvent) -> None:
        """Store a workload as pending (committed), unless a newer revision is stored."""
        with _transaction(self._db):
            self._upsert(stored)
            self._log(stored.updated_s, event, None)

    @_guarded("storing pending workloads", write=True)
    def put_pending_many(self, items: Sequence[tuple[StoredWorkload, LoggedEvent]]) -> None:
        """Store several workloads as pending in one transaction (one fsync: the agent's
        group commit of the PUTs that arrived together), each unless a newer revision is
        stored. All are committed, or none."""
        with _transaction(self._db):
            for stored, event in items:
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
    @_guarded("reading the assignments", write=False)
    def load_assignments(self) -> dict[str, Assignment]:
        """The stored assignment by workload id (`StateCorruptError` for an unreadable row)."""
        rows = self._db.execute("SELECT workload_id, cpuset, reason FROM assignments").fetchall()
        out: dict[str, Assignment] = {}
        for wid, cpus, reason in rows:
            try:
                out[wid] = Assignment(wid, CpuSet.parse(cpus), reason)
            except (InputError, ValueError, TypeError) as err:
                self._fail_corrupt(f"assignment row {wid!r} cannot be read: {_first_line(err)}")
        return out

    @_guarded("committing a decision", write=True)
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
        with _transaction(self._db) as db:
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
                _put_meta(db, "topology", topology_key)
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

    @_guarded("reading the decisions", write=False)
    def last_decision(self) -> DecisionRecord | None:
        """The most recent decision, or None."""
        row = self._db.execute(
            "SELECT id, at_s, trigger, events, workloads, duration_ms, allocator, moves, detail "
            "FROM decisions ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        try:
            detail = json.loads(row[8])
        except ValueError as err:
            self._fail_corrupt(f"decision {row[0]} cannot be read: {_first_line(err)}")
        return DecisionRecord(
            int(row[0]),
            float(row[1]),
            str(row[2]),
            int(row[3]),
            int(row[4]),
            float(row[5]),
            str(row[6]),
            int(row[7]),
            detail,
        )

    @_guarded("reading the decisions", write=False)
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

    @_guarded("logging events", write=True)
    def log_events(self, at_s: float, events: Sequence[LoggedEvent]) -> None:
        """Append events that belong to no decision (reconcile, drift, restart)."""
        if not events:
            return
        with _transaction(self._db):
            for event in events:
                self._log(at_s, event, None)

    @_guarded("reading the event log", write=False)
    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest events, newest first."""
        rows = self._db.execute(
            "SELECT seq, at_s, kind, workload_id, decision_id, detail FROM events "
            "ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("seq", "at_s", "kind", "workload_id", "decision_id", "detail")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    @_guarded("pruning the logs", write=True)
    def prune(self, *, keep_events: int, keep_decisions: int, usage_before_s: float) -> None:
        """Check the file (`check_integrity`), then bound the log tables and drop usage
        older than ``usage_before_s``. The agent prunes periodically, so a file corrupted
        under it is found within a period."""
        self.check_integrity()
        with _transaction(self._db) as db:
            db.execute(
                "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?", (keep_events,)
            )
            db.execute(
                "DELETE FROM decisions WHERE id <= (SELECT MAX(id) FROM decisions) - ?",
                (keep_decisions,),
            )
            db.execute("DELETE FROM usage WHERE timestamp_s < ?", (usage_before_s,))

    # --- usage ----------------------------------------------------------------------
    @_guarded("storing usage", write=True)
    def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Store downsampled usage rows."""
        if not rows:
            return
        with _transaction(self._db) as db:
            db.executemany(
                "INSERT INTO usage (workload_id, timestamp_s, usage_cores, capacity_cores) "
                "VALUES (?, ?, ?, ?)",
                [(r.workload_id, r.timestamp_s, r.usage_cores, r.capacity_cores) for r in rows],
            )

    @_guarded("reading usage", write=False)
    def usage_of(self, workload_id: str, *, since_s: float = 0.0) -> list[UsageRow]:
        """Stored usage of one workload, oldest first."""
        rows = self._db.execute(
            "SELECT workload_id, timestamp_s, usage_cores, capacity_cores FROM usage "
            "WHERE workload_id = ? AND timestamp_s >= ? ORDER BY timestamp_s",
            (workload_id, since_s),
        ).fetchall()
        return [UsageRow(str(w), float(t), float(u), float(c)) for w, t, u, c in rows]


# --- helpers --------------------------------------------------------------------------
_FIX_FULL = "free space on the state's file system; the agent retries"


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; rolled back (if SQLite has not already) on any error,
    including a failed COMMIT, so a write that raised was not committed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _get_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _put_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _quick_check(db: sqlite3.Connection) -> list[str]:
    """The first problems ``PRAGMA quick_check`` finds (empty: the file is sound)."""
    rows = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)").fetchall()]
    if rows == ["ok"]:
        return []
    lines = (line.strip() for row in rows for line in row.splitlines())
    return [line for line in lines if line and not line.startswith("*** in database")]


def _tables(db: sqlite3.Connection) -> set[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {str(row[0]) for row in rows}


@functools.cache
def _expected_columns() -> dict[str, list[str]]:
    """Column names of each table of corral's schema."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return {
            table: [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]
            for table in sorted(_tables(db))
        }
    finally:
        db.close()


def _check_schema(path: Path, db: sqlite3.Connection, tables: set[str]) -> None:
    """Refuse a database that is not corral's, or of another schema version."""
    expected = _expected_columns()
    if "meta" not in tables or _get_meta_safe(db, "schema_version") is None:
        names = ", ".join(sorted(tables)[:8])
        raise StateCorruptError(
            path, f"this SQLite database is not a corral state file (its tables: {names})"
        )
    found = _get_meta_safe(db, "schema_version")
    if found != str(SCHEMA_VERSION):
        raise StateError(
            f"{path}: state schema version {found}, this corral reads {SCHEMA_VERSION}; "
            "run the corral that wrote it, or move the file away to start afresh"
        )
    for table, columns in expected.items():
        have = [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]
        if have != columns:
            problem = "is missing" if not have else f"has columns {have}, expected {columns}:"
            raise StateCorruptError(path, f"table {table} {problem} (not corral's schema)")


def _get_meta_safe(db: sqlite3.Connection, key: str) -> str | None:
    try:
        return _get_meta(db, key)
    except sqlite3.OperationalError:  # a foreign meta table without those columns
        return None


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _size(path: Path) -> int:
    """The file's size, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _missing_problem(path: Path, previous: LockHolder | None, wal: Path | None = None) -> str:
    what = "does not exist" if not path.exists() else "is empty"
    if previous is not None and previous.database_id:
        return (
            f"the state file {what}, but {_sidecar(path, '.lock').name} says database "
            f"{previous.database_id} lived here (last opened by process {previous.pid}): "
            "it was deleted or truncated"
        )
    return f"the state file {what}, but its write-ahead log {wal} holds commits"


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _move_aside(path: Path) -> list[Path]:
    """Rename the database and its -wal/-shm to ``<path>.corrupt-<UTC time>[...]``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = _sidecar(path, f".corrupt-{stamp}")
    n = 1
    while any(_sidecar(base, s).exists() for s in ("", "-wal", "-shm")):
        base = _sidecar(path, f".corrupt-{stamp}-{n}")
        n += 1
    moved: list[Path] = []
    for suffix in ("", "-wal", "-shm"):
        source = _sidecar(path, suffix)
        if not source.exists():
            continue
        target = _sidecar(base, suffix)
        try:
            source.rename(target)
        except OSError as err:
            reason, fix = _os_reason(err, path.parent)
            raise StateUnavailableError(
                path, f"cannot move {source.name} aside: {reason}", fix=fix, transient=True
            ) from err
        moved.append(target)
    return moved


def _acquire_lock(path: Path) -> int:
    """An fd of ``<path>.lock`` holding an exclusive flock (released when it is closed or
    the process dies); `StateLockedError` naming the holder when another has it."""
    lock_path = _sidecar(path, ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        reason, fix = _os_reason(err, path.parent)
        raise StateUnavailableError(
            path, f"cannot open the lock file {lock_path.name}: {reason}", fix=fix, transient=True
        ) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _read_holder(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StateLockedError(path, holder) from err
        reason, fix = _os_reason(err, path.parent)
        raise StateUnavailableError(
            path, f"cannot lock {lock_path.name}: {reason}", fix=fix, transient=False
        ) from err
    return fd


def _read_holder(fd: int) -> LockHolder | None:
    """The holder the lock file names, or None when it is empty or unreadable."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return LockHolder(int(data["pid"]), float(data["started_s"]), str(data["database_id"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_holder(path: Path, fd: int, holder: LockHolder) -> None:
    data = (json.dumps(holder.to_json()) + "\n").encode()
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        _fsync_dir(path)
    except OSError as err:
        reason, fix = _os_reason(err, path.parent)
        raise StateUnavailableError(
            path, f"cannot write the lock file: {reason}", fix=fix, transient=True
        ) from err


def _fsync_dir(path: Path) -> None:
    """fsync the directory of ``path``, so that the file's name survives a power loss."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_reason(err: OSError, directory: Path) -> tuple[str, str]:
    """(reason, fix) a person reads for an OS error on the state directory."""
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the file system is full", _FIX_FULL
    if code == errno.EROFS:
        return (
            "the file system is read-only",
            f"remount {directory} read-write (one that turned read-only after errors needs "
            "a check first) or give the agent a --state on a writable file system",
        )
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied", f"let the agent's user write {directory}"
    if code == errno.EIO:
        return "an I/O error", "check the disk (dmesg); the agent retries"
    return err.strerror or str(err), "check the state's file system"


def _diagnose(directory: Path) -> tuple[str, str] | None:
    """Why ``directory`` cannot take a write now (by writing a small probe file), or None
    when it can. SQLite reports EROFS, ENOSPC and EIO alike as SQLITE_IOERR."""
    probe = directory / f".corral-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as err:
        return _os_reason(err, directory)
    try:
        os.write(fd, b"\0" * 4096)
    except OSError as err:
        return _os_reason(err, directory)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            probe.unlink()
    return None
