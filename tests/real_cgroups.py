"""Helpers for tests on this host's real cgroup v1 hierarchies: why they must be skipped,
a unique corral parent, and removal of everything made under it (processes moved back to
each hierarchy's root first, frozen groups thawed)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")


def v1_skip_reason(controllers: Iterable[str]) -> str | None:
    """Why a test needing these writable v1 hierarchies cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to write cgroups"
    for controller in controllers:
        directory = CGROUP_ROOT / controller
        if not (directory / "cgroup.procs").exists() or (directory / "cgroup.controllers").exists():
            return f"no cgroup v1 {controller} hierarchy at {directory}"
        if not os.access(directory, os.W_OK):
            return f"{directory} is not writable"
    return None


def remove_tree(parent: str) -> list[str]:
    """Remove ``parent`` and its children from every hierarchy, deepest first; returns the
    directories that are still there (a co-mounted hierarchy's symlink is skipped)."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / parent
        if hierarchy.is_symlink() or not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*dirs, top]:
            with suppress(OSError):
                (directory / "freezer.state").write_text("THAWED")
            with suppress(OSError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    (hierarchy / "cgroup.procs").write_text(pid)
            with suppress(OSError):
                directory.rmdir()
    return [str(h / parent) for h in CGROUP_ROOT.iterdir() if (h / parent).exists()]


@pytest.fixture
def parent() -> Iterator[str]:
    """A unique corral parent cgroup name, removed from every hierarchy afterwards (the
    test fails when some of it cannot be removed)."""
    name = f"corral-test-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        assert not remove_tree(name), "cgroups left behind"
