"""CpuSet: an immutable set of logical CPU ids in the kernel's list format."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

_MAX_CPU_ID: Final = 1 << 20  # far above any real host; guards "0-99999999" typos


class CpuSet:
    """An immutable, hashable set of CPU ids.

    Iteration is in ascending id order and ``str()`` prints the canonical kernel list
    format (``0-3,8,10-11``): sorted, with runs of two or more merged into ranges. The
    empty set prints as ``""``, which is what the kernel accepts and prints for an empty
    ``cpuset.cpus``.
    """

    __slots__ = ("_frozen", "_ids")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        frozen = frozenset(ids)
        for cpu in frozen:
            if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 0:
                raise ValueError(f"CPU ids must be non-negative integers, got {cpu!r}")
        self._frozen: frozenset[int] = frozen
        self._ids: tuple[int, ...] = tuple(sorted(frozen))

    @classmethod
    def _trusted(cls, frozen: frozenset[int]) -> CpuSet:
        # Set algebra on valid sets gives valid ids: skip the per-id check on hot paths.
        made = cls.__new__(cls)
        made._frozen = frozen
        made._ids = tuple(sorted(frozen))
        return made

    # --- construction -------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> CpuSet:
        """Parse the kernel list format (``"0-3,8,10-11"``; blanks and a newline allowed).

        Raises ``ValueError`` naming the bad element for reversed ranges (``3-1``),
        non-numbers (``a``), negative ids and empty elements (``1,,2``).
        """
        stripped = text.strip()
        if not stripped:
            return cls()
        ids: set[int] = set()
        for raw in stripped.split(","):
            part = raw.strip()
            if not part:
                raise ValueError(f"empty element in CPU list {text!r}")
            if part.startswith("-"):
                raise ValueError(f"negative CPU id {part!r} in CPU list {text!r}")
            lo_text, sep, hi_text = part.partition("-")
            lo = _parse_id(lo_text, part, text)
            hi = _parse_id(hi_text, part, text) if sep else lo
            if hi < lo:
                raise ValueError(f"reversed range {part!r} in CPU list {text!r}: write {hi}-{lo}")
            ids.update(range(lo, hi + 1))
        return cls(ids)

    @classmethod
    def range(cls, start: int, stop: int) -> CpuSet:
        """The CPUs ``start`` .. ``stop - 1``, like ``range``."""
        return cls(range(start, stop))

    # --- set protocol -------------------------------------------------------------
    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __bool__(self) -> bool:
        return bool(self._ids)

    def __contains__(self, cpu: object) -> bool:
        return cpu in self._frozen

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CpuSet):
            return self._frozen == other._frozen
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._frozen)

    def __or__(self, other: CpuSet) -> CpuSet:
        return CpuSet._trusted(self._frozen | other._frozen)

    def __and__(self, other: CpuSet) -> CpuSet:
        return CpuSet._trusted(self._frozen & other._frozen)

    def __sub__(self, other: CpuSet) -> CpuSet:
        return CpuSet._trusted(self._frozen - other._frozen)

    def __xor__(self, other: CpuSet) -> CpuSet:
        return CpuSet._trusted(self._frozen ^ other._frozen)

    def __le__(self, other: CpuSet) -> bool:
        return self._frozen <= other._frozen

    def __lt__(self, other: CpuSet) -> bool:
        return self._frozen < other._frozen

    def union(self, *others: CpuSet) -> CpuSet:
        """All CPUs in this set or any of ``others``."""
        merged = set(self._frozen)
        for other in others:
            merged |= other._frozen
        return CpuSet._trusted(frozenset(merged))

    def isdisjoint(self, other: CpuSet) -> bool:
        """True when no CPU is in both sets."""
        return self._frozen.isdisjoint(other._frozen)

    def issubset(self, other: CpuSet) -> bool:
        """True when every CPU of this set is in ``other``."""
        return self._frozen <= other._frozen

    def ids(self) -> tuple[int, ...]:
        """The ids in ascending order."""
        return self._ids

    def first(self, n: int) -> CpuSet:
        """The ``n`` lowest ids."""
        return CpuSet(self._ids[:n])

    # --- printing -----------------------------------------------------------------
    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in _runs(self._ids))

    def __repr__(self) -> str:
        return f"CpuSet({str(self)!r})"


def _parse_id(token: str, part: str, text: str) -> int:
    token = token.strip()
    if not token.isdigit():
        if token.startswith("-"):
            raise ValueError(f"negative CPU id in {part!r} of CPU list {text!r}")
        raise ValueError(f"{part!r} is not a CPU id or range in CPU list {text!r}")
    value = int(token)
    if value > _MAX_CPU_ID:
        raise ValueError(f"CPU id {value} in {text!r} is larger than any host has")
    return value


def _runs(ids: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    if not ids:
        return
    start = prev = ids[0]
    for cpu in ids[1:]:
        if cpu != prev + 1:
            yield start, prev
            start = cpu
        prev = cpu
    yield start, prev
