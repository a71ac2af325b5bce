"""The one place corral touches cgroup files: read, write, mkdir, rmdir, list tasks.

Every operation is addressed by (hierarchy path, relative cgroup, file) so the same code
runs on ``/sys/fs/cgroup`` and on a fixture tree. Writes never create files (a missing
interface file means a missing controller, never something to invent) and hand the
whole value to one ``write(2)``, as cgroupfs requires. OS errors become `CgroupFsError`
carrying the path and errno; a cgroup that vanishes mid-read is reported as missing.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from corral.enforce.report import Failure
from corral.errors import EnforcementError


class CgroupFsError(EnforcementError):
    """A refused cgroupfs operation; ``failure`` names the path, value and errno."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(str(failure))


def cgroup_dir(hierarchy: Path, cgroup: str) -> Path:
    """The directory of ``cgroup`` (relative, '' for the root) in ``hierarchy``."""
    return hierarchy / cgroup if cgroup else hierarchy


def file_path(hierarchy: Path | str, cgroup: str, name: str) -> str:
    """The path of interface file ``name`` of ``cgroup`` as a string (the hot path of an
    apply builds thousands of these; plain strings cost a fraction of `Path` joins)."""
    return f"{hierarchy}/{cgroup}/{name}" if cgroup else f"{hierarchy}/{name}"


def read_file(path: Path | str) -> str | None:
    """The content of an interface file, or None when it (or its cgroup) does not exist.

    Raises `CgroupFsError` for other errors (EACCES, EIO...).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise CgroupFsError(_failure(path, "", err)) from err
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as err:
        if err.errno == errno.ENODEV:
            return None  # the cgroup was removed while we read it
        raise CgroupFsError(_failure(path, "", err)) from err
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def write_file(path: Path | str, value: str) -> None:
    """Write ``value`` to an existing interface file in one write; `CgroupFsError` on refusal."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as err:
        raise CgroupFsError(_failure(path, value, err)) from err
    try:
        # A zero-byte write never reaches the kernel's handler: "" must travel as "\n"
        # (an empty cpuset.cpus is written this way).
        os.write(fd, value.encode() if value else b"\n")
    except OSError as err:
        raise CgroupFsError(_failure(path, value, err)) from err
    finally:
        os.close(fd)


def make_dir(path: Path) -> bool:
    """Create one cgroup directory; False when it already existed. `CgroupFsError` else."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    except OSError as err:
        raise CgroupFsError(_failure(path, "", err)) from err
    return True


def remove_dir(path: Path) -> bool:
    """Remove one (empty of tasks and children) cgroup; False when it was already gone."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return False
    except OSError as err:
        raise CgroupFsError(_failure(path, "", err)) from err
    return True


def list_pids(directory: Path | str) -> tuple[int, ...]:
    """The pids in ``cgroup.procs`` of a cgroup directory (empty if it does not exist)."""
    text = read_file(f"{directory}/cgroup.procs")
    if text is None:
        return ()
    return tuple(int(line) for line in text.split() if line.strip())


def child_dirs(directory: Path) -> tuple[str, ...]:
    """Names of the child cgroups of a cgroup directory (sorted; empty if it is missing)."""
    try:
        return tuple(
            sorted(e.name for e in os.scandir(directory) if e.is_dir(follow_symlinks=False))
        )
    except (FileNotFoundError, NotADirectoryError):
        return ()
    except OSError as err:
        raise CgroupFsError(_failure(directory, "", err)) from err


def _failure(path: Path | str, value: str, err: OSError) -> Failure:
    code = err.errno if err.errno is not None else errno.EIO
    return Failure(path=str(path), value=value, errno=code, message=err.strerror or str(err))
