"""What the agent core reports as it works; metrics (or a test) listen. The core never
imports prometheus: it calls an `Observer`."""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """Typed notifications from the agent core."""

    def decision(self, *, trigger: str, duration_s: float, fallback: bool) -> None:
        """A placement decision was made (``fallback``: the solver gave way to greedy)."""
        ...

    def moves(self, count: int) -> None:
        """Placed workloads were given different CPUs by a decision."""
        ...

    def write_errors(self, count: int) -> None:
        """Cgroup writes failed."""
        ...

    def drift(self, *, found: int, repaired: int) -> None:
        """A reconcile found drifted files and repaired some of them."""
        ...


class NullObserver:
    """Ignores every notification."""

    def decision(self, *, trigger: str, duration_s: float, fallback: bool) -> None:
        """Ignored."""

    def moves(self, count: int) -> None:
        """Ignored."""

    def write_errors(self, count: int) -> None:
        """Ignored."""

    def drift(self, *, found: int, repaired: int) -> None:
        """Ignored."""
