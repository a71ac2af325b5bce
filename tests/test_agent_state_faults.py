"""The agent's state store under faults, on real SQLite files and real file systems:
corrupt, foreign, truncated and missing files are refused with the fix (never an empty
start), a second opener is refused naming the holder, a file deleted or corrupted while
open stops acknowledging writes, and disk full or a read-only file system is a clear,
transient error after which nothing acknowledged is missing."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from corral.agent.state import (
    Durability,
    LoggedEvent,
    StateCorruptError,
    StateError,
    StateLockedError,
    StateMissingError,
    StateStore,
    StateUnavailableError,
    Status,
    StoredWorkload,
)
from corral.placement.workload import Workload

PAGE = 4096


def _stored(wid: str, revision: int) -> StoredWorkload:
    return StoredWorkload(Workload(id=wid, cpus=1), Status.PENDING, "", revision, 1.0, 1.0)


def _put(store: StateStore, wid: str, revision: int) -> None:
    store.put_pending(_stored(wid, revision), event=LoggedEvent("queued", wid, "x" * 200))


def _filled(path: Path, n: int = 60) -> dict[str, StoredWorkload]:
    """A closed store at ``path`` holding ``n`` workloads (checkpointed into the file)."""
    store = StateStore(path)
    for i in range(n):
        _put(store, f"w{i}", i + 1)
    workloads = store.load_workloads()
    store.close()
    return workloads


def _garble(path: Path, offset: int, size: int = 64) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(random.Random(offset).randbytes(size))


def _open_and_load(path: Path) -> dict[str, StoredWorkload]:
    store = StateStore(path)
    try:
        return store.load_workloads()
    finally:
        store.close()


# --- corrupt files at open -----------------------------------------------------------------
@pytest.mark.parametrize("page", [0, 1, 2, 5, 9, -1])
def test_garbage_at_the_start_of_a_page_is_refused_with_the_fix(tmp_path: Path, page: int) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    pages = path.stat().st_size // PAGE
    offset = (page % pages) * PAGE + (16 if page == 0 else 0)
    _garble(path, offset)
    before = path.read_bytes()
    with pytest.raises(StateCorruptError) as caught:
        _open_and_load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "restore it from a backup" in message
    assert "--reset-state" in message
    assert f"{path}.corrupt-" in message
    assert "\n" not in message
    assert path.read_bytes() == before  # refused, not rewritten


@pytest.mark.parametrize("fraction", [0.13, 0.37, 0.5, 0.71, 0.93, 0.999])
def test_garbage_anywhere_is_refused_or_every_workload_reads_back(
    tmp_path: Path, fraction: float
) -> None:
    path = tmp_path / "state.db"
    stored = _filled(path)
    _garble(path, int(path.stat().st_size * fraction) - 64)
    try:
        loaded = _open_and_load(path)
    except StateCorruptError:
        return
    assert loaded == stored  # garbage that hit unused bytes or an event's text only


@pytest.mark.parametrize("keep", [100, PAGE, 0.5])
def test_a_truncated_file_is_refused(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    os.truncate(path, int(keep if keep >= 1 else path.stat().st_size * keep))
    with pytest.raises(StateCorruptError, match="restore it from a backup"):
        _open_and_load(path)


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    text = b"workloads:\n  - id: web\n" * 500
    path.write_bytes(text)
    with pytest.raises(StateCorruptError, match="is not an SQLite database"):
        StateStore(path)
    assert path.read_bytes() == text
    assert not (tmp_path / "state.db-wal").exists()


def test_an_sqlite_file_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
        db.execute("INSERT INTO moz_places (url) VALUES ('https://example.org')")
        db.commit()
    with pytest.raises(
        StateCorruptError, match=r"not a corral state file \(its tables: moz_places"
    ):
        StateStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM moz_places").fetchone()[0] == 1


def test_a_corral_file_missing_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE assignments")
        db.commit()
    with pytest.raises(StateCorruptError, match="table assignments is missing"):
        StateStore(path)


def test_another_schema_version_is_an_error_that_reset_does_not_touch(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.commit()
    with pytest.raises(StateError, match="schema version 99") as caught:
        StateStore(path, reset_corrupt=True)
    assert not isinstance(caught.value, StateCorruptError)
    assert path.exists()


def test_a_rewritten_workload_row_is_reported_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _filled(path, 3)
    with closing(sqlite3.connect(path)) as db:
        db.execute('UPDATE workloads SET spec = \'{"id": "w1", "cp\' WHERE id = \'w1\'')
        db.commit()
    store = StateStore(path)
    try:
        with pytest.raises(StateCorruptError, match="workload row 'w1' cannot be read"):
            store.load_workloads()
        with pytest.raises(StateCorruptError):  # and nothing more is acknowledged
            _put(store, "late", 99)
    finally:
        store.close()


def test_a_deleted_or_emptied_state_file_is_not_a_first_start(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _filled(path, 3)
    path.unlink()
    with pytest.raises(StateMissingError, match=r"does not exist, but state\.db\.lock says"):
        StateStore(path)
    path.write_bytes(b"")
    with pytest.raises(StateMissingError, match="is empty"):
        StateStore(path)


def test_a_first_start_creates_the_file_and_records_a_database_id(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    store = StateStore(path)
    assert store.meta("database_id") == store.database_id
    assert len(store.database_id) == 32
    store.close()
    again = StateStore(path)
    assert again.database_id == store.database_id
    again.close()


# --- reset ---------------------------------------------------------------------------------
def test_reset_moves_the_bad_file_aside_and_starts_empty_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    _garble(path, 2 * PAGE)
    bad = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="corral.agent.state"):
        store = StateStore(path, reset_corrupt=True)
    try:
        assert store.load_workloads() == {}
        _put(store, "fresh", 1)
    finally:
        store.close()
    (aside,) = tmp_path.glob("state.db.corrupt-*")
    assert aside.read_bytes() == bad
    (record,) = [r for r in caplog.records if r.getMessage() == "state.reset"]
    assert str(aside) in record.__dict__["moved_to"]
    assert "integrity check" in record.__dict__["problem"]
    assert set(_open_and_load(path)) == {"fresh"}


def test_reset_of_a_missing_file_starts_fresh_with_a_new_database_id(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    old_id = store.database_id
    store.close()
    path.unlink()
    store = StateStore(path, reset_corrupt=True)
    assert store.database_id != old_id
    store.close()


def test_set_aside_moves_the_file_with_its_wal_and_refuses_a_held_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    with pytest.raises(StateLockedError):
        StateStore.set_aside(path)
    store.close()
    wal, shm = tmp_path / "state.db-wal", tmp_path / "state.db-shm"
    wal.write_bytes(b"wal")  # as a kill -9 leaves them
    shm.write_bytes(b"shm")
    main = path.read_bytes()
    moved = StateStore.set_aside(path)
    assert [p.read_bytes() for p in moved] == [main, b"wal", b"shm"]
    assert moved[0].name.startswith("state.db.corrupt-")
    assert [p.name for p in moved[1:]] == [moved[0].name + "-wal", moved[0].name + "-shm"]
    assert not any(p.exists() for p in (path, wal, shm))
    fresh = StateStore(path)  # a first start, not a missing file
    assert fresh.load_workloads() == {}
    fresh.close()


# --- while running -------------------------------------------------------------------------
@pytest.mark.parametrize("victim", ["state.db", "state.db-wal"])
def test_a_file_deleted_while_open_stops_acknowledging_writes(tmp_path: Path, victim: str) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    _put(store, "a", 1)
    (tmp_path / victim).unlink()
    for _ in range(2):  # refused, and refused again: the store does not forget
        with pytest.raises(StateUnavailableError, match="deleted or replaced") as caught:
            _put(store, "b", 2)
        assert caught.value.transient is False
    assert store.failure is not None
    assert set(store.load_workloads()) == {"a"}  # reads still answer
    store.close()
    (rescued,) = tmp_path.glob("state.db.rescued-*")
    assert f"saved to {rescued}" in caught.value.fix
    for leftover in tmp_path.glob("state.db*"):  # the operator follows the fix
        if leftover not in (rescued, tmp_path / "state.db.lock"):
            leftover.unlink()
    rescued.rename(path)
    again = StateStore(path)
    assert set(again.load_workloads()) == {"a"}
    assert again.database_id == store.database_id
    again.close()


def test_a_state_file_replaced_while_open_stops_acknowledging_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    _put(store, "a", 1)
    other = tmp_path / "other.db"
    shutil.copy(path, other)
    other.replace(path)
    with pytest.raises(StateUnavailableError, match="replaced by another file"):
        store.check_identity()
    with pytest.raises(StateUnavailableError, match="deleted or replaced"):
        _put(store, "b", 2)
    store.close()


def test_a_file_corrupted_while_open_is_found_by_the_periodic_prune(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    for i in range(60):
        _put(store, f"w{i}", i + 1)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # pages into the file
    _garble(path, 3 * PAGE)
    with pytest.raises(StateCorruptError, match=r"malformed|integrity check"):
        store.prune(keep_events=1000, keep_decisions=1000, usage_before_s=0.0)
    with pytest.raises(StateCorruptError, match="writes are refused"):
        _put(store, "late", 99)
    store.close()
    with pytest.raises(StateCorruptError):
        StateStore(path)


def test_a_busy_database_is_a_transient_error_and_the_next_write_succeeds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StateUnavailableError, match="stayed locked") as caught:
            _put(store, "a", 1)
        assert caught.value.transient is True
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        other.execute("ROLLBACK")
        _put(store, "a", 1)
    finally:
        other.close()
        store.close()
    assert set(_open_and_load(path)) == {"a"}


@pytest.mark.parametrize("durability", list(Durability))
def test_durability_sets_the_synchronous_pragma(tmp_path: Path, durability: Durability) -> None:
    store = StateStore(tmp_path / "state.db", durability=durability)
    level = store._db.execute("PRAGMA synchronous").fetchone()[0]
    store.close()
    assert level == {Durability.NORMAL: 1, Durability.FULL: 2}[durability]


def test_full_durability_is_the_default(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.close()
    assert store.durability is Durability.FULL


# --- lock ----------------------------------------------------------------------------------
def test_a_second_store_on_the_same_file_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    with pytest.raises(StateLockedError, match=f"in use by process {os.getpid()} ") as caught:
        StateStore(path)
    assert caught.value.holder is not None
    assert caught.value.holder.database_id == store.database_id
    store.close()
    StateStore(path).close()  # released on close


_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from corral.agent.state import StateStore
    store = StateStore(Path(sys.argv[1]))
    print("open", flush=True)
    sys.stdin.read()
    """
)


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "open\n"
            with pytest.raises(StateLockedError, match=f"process {holder.pid} "):
                StateStore(path)
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
        finally:
            if holder.poll() is None:
                holder.kill()
    assert holder.returncode == -signal.SIGKILL
    store = StateStore(path)
    assert store.load_workloads() == {}
    store.close()


# --- real file systems: disk full and read-only (root) --------------------------------------
def _root_skip() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs or ext4 image needs root"
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test, always unmounted."""
    skip = _root_skip()
    if skip is not None:
        pytest.skip(skip)
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.root
def test_disk_full_is_transient_and_nothing_acknowledged_is_lost(small_tmpfs: Path) -> None:
    path = small_tmpfs / "state.db"
    store = StateStore(path)
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (600 * 1024))
    acked: set[str] = set()
    refused: StateUnavailableError | None = None
    for i in range(5000):
        try:
            _put(store, f"w{i}", i + 1)
        except StateUnavailableError as err:
            refused = err
            break
        acked.add(f"w{i}")
    assert refused is not None, "the 1 MiB file system never filled"
    assert refused.transient is True
    assert "the file system is full" in refused.reason
    assert "free space" in str(refused)
    assert isinstance(refused.__cause__, sqlite3.Error)
    assert f"w{len(acked)}" not in store.load_workloads()  # the refused write is not there
    with pytest.raises(StateUnavailableError, match="full"):
        _put(store, "still-full", 10_000)
    filler.unlink()
    _put(store, "after", 10_001)  # space is back: the same store writes again
    acked.add("after")
    store.close()
    assert set(_open_and_load(path)) == acked


@pytest.mark.root
def test_a_read_only_file_system_is_a_clear_error_at_open(small_tmpfs: Path) -> None:
    _filled(small_tmpfs / "state.db", 3)
    _run("mount", "-o", "remount,ro", str(small_tmpfs))
    for name in ("state.db", "new.db"):
        with pytest.raises(StateUnavailableError, match="read-only") as caught:
            StateStore(small_tmpfs / name)
        assert "remount" in caught.value.fix
    _run("mount", "-o", "remount,rw", str(small_tmpfs))
    assert len(_open_and_load(small_tmpfs / "state.db")) == 3


def _open_as_nobody(path: Path) -> str:
    """Open a store at ``path`` in a forked child that dropped to user nobody (the modules
    are already loaded, so the child needs no access to the venv), and return what the
    refusal said: ``reason | fix``, or ``opened`` / the unexpected error."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, try, report, and leave at once
        os.close(read)
        message = "opened"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            StateStore(path)
        except StateUnavailableError as err:
            message = f"{err.reason} | {err.fix}"
        except BaseException as err:
            message = f"unexpected {type(err).__name__}: {err}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


@pytest.mark.root
def test_a_state_directory_the_agent_may_not_write_is_a_clear_error() -> None:
    skip = _root_skip()
    if skip is not None:
        pytest.skip(skip)
    shared = Path(tempfile.mkdtemp(prefix="corral-perm-"))  # tmp_path is root's, mode 0700
    try:
        shared.chmod(0o555)
        said = _open_as_nobody(shared / "state.db")
    finally:
        shutil.rmtree(shared)
    assert "permission denied" in said, said
    assert f"let the agent's user write {shared}" in said


@pytest.fixture
def aborting_ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mount point, image) of a small ext4 image mounted errors=remount-ro, on a kernel
    whose /sys/fs/ext4/<dev>/trigger_fs_error makes it abort the journal and go read-only."""
    skip = _root_skip()
    if skip is None and shutil.which("mkfs.ext4") is None:
        skip = "mkfs.ext4 is not installed"
    if skip is not None:
        pytest.skip(skip)
    image, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    _run("mkfs.ext4", "-q", "-F", str(image))
    _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mnt))
    try:
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True, text=True, check=True
        ).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"{trigger} does not exist on this kernel")
        yield mnt, image
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.root
def test_a_file_system_turning_read_only_while_running_loses_no_acknowledged_write(
    aborting_ext4: tuple[Path, Path],
) -> None:
    mnt, image = aborting_ext4
    source = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True, text=True, check=True
    ).stdout.strip()
    store = StateStore(mnt / "state.db")  # the default, full durability
    acked = set()
    for i in range(30):
        _put(store, f"w{i}", i + 1)
        acked.add(f"w{i}")
    (Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error").write_text("test\n")
    for _ in range(2):
        with pytest.raises(StateUnavailableError, match="the file system is read-only") as caught:
            _put(store, "late", 100)
        assert caught.value.transient is True
        assert "remount" in caught.value.fix
    assert set(store.load_workloads()) == acked  # still answers reads
    store.close()  # the failed checkpoint is logged, not raised
    _run("umount", str(mnt))
    subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, check=False)
    _run("mount", "-o", "loop", str(image), str(mnt))
    assert set(_open_and_load(mnt / "state.db")) == acked


def test_a_closed_store_raises_state_errors_not_sqlite_errors(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StateError, match="closed"):
        _put(store, "a", 1)
    with pytest.raises(StateError) as caught:
        store.load_workloads()
    assert isinstance(caught.value.__cause__, sqlite3.ProgrammingError)
