"""LLC ways and memory bandwidth for BE through resctrl (Intel CAT/MBA) where present.

The ladder levels are BE's number of LLC ways and its MBA percentage index. Masks are
contiguous, as CAT requires: BE takes the low ways, LC the rest, each at least
``min_cbm_bits`` wide. Hosts without resctrl (this project's VM) leave both knobs off.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The LLC and memory-bandwidth ladders (all zero: knob off)."""

    total_ways: int = 0
    """Ways in the L3 capacity bitmask (``info/L3/cbm_mask`` bit count); 0: no CAT."""
    min_ways: int = 1
    """``info/L3/min_cbm_bits``: the narrowest mask the hardware accepts."""
    mb_ladder: tuple[int, ...] = ()
    """BE memory-bandwidth percentages from the most restrictive; empty: no MBA."""

    def __post_init__(self) -> None:
        if self.total_ways and self.total_ways < 2 * self.min_ways:
            raise InputError(
                "cache.total_ways",
                f"{self.total_ways} ways cannot give LC and BE {self.min_ways} each",
                "turn the knob off with total_ways 0",
            )
        for i, mb in enumerate(self.mb_ladder):
            if not 1 <= mb <= 100:
                raise InputError(f"cache.mb_ladder[{i}]", f"{mb} not in 1..100", "e.g. 50")

    @property
    def max_be_ways(self) -> int:
        """The top of the ways ladder (LC keeps at least ``min_ways``)."""
        return self.total_ways - self.min_ways if self.total_ways else 0


def masks(total_ways: int, be_ways: int) -> tuple[int, int]:
    """``(lc_mask, be_mask)``: contiguous capacity bitmasks, BE in the low ``be_ways``."""
    if not 0 < be_ways < total_ways:
        raise ValueError(f"BE ways {be_ways} not in 1..{total_ways - 1}")
    full = (1 << total_ways) - 1
    be = (1 << be_ways) - 1
    return full & ~be, be
