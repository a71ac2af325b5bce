"""senpai's law on recorded PSI sequences (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.control.memory import MIB, SenpaiSettings, SenpaiState, senpai_step

ON = SenpaiSettings(enabled=True, min_bytes=64 * MIB, max_bytes=4096 * MIB)
USE = 1024 * MIB


def feed(readings: list[tuple[float, int, int]], settings: SenpaiSettings = ON) -> list[int | None]:
    state = SenpaiState()
    highs = []
    for t, psi, usage in readings:
        state = senpai_step(settings, state, psi_some_us=psi, usage_bytes=usage, now=t)
        highs.append(state.high)
    return highs


def test_without_pressure_the_limit_probes_down_one_percent_per_tick() -> None:
    highs = feed([(0.0, 0, USE), (1.0, 0, USE), (2.0, 0, USE)])
    assert highs[0] is None  # the first reading only sets the baseline
    assert highs[1] == int(USE * 0.99)
    assert highs[2] == int(USE * 0.99)  # relative to current use, not the last limit


def test_pressure_above_target_raises_the_limit_growing_with_the_excess() -> None:
    # target: 10 ms per 6 s -> 1667 us per 1 s tick.
    mild = feed([(0.0, 0, USE), (1.0, 2_000, USE)])[1]
    heavy = feed([(0.0, 0, USE), (1.0, 10_000, USE)])[1]
    assert mild is not None and heavy is not None
    assert USE < mild < heavy
    assert heavy == 2 * USE  # at most doubling


def test_pressure_just_under_target_barely_probes() -> None:
    high = feed([(0.0, 0, USE), (1.0, 1_650, USE)])[1]
    assert high is not None
    assert USE * 0.99 < high < USE


def test_limit_is_clamped_to_min_and_box_limit() -> None:
    small = feed([(0.0, 0, 10 * MIB), (1.0, 0, 10 * MIB)])[1]
    assert small == 64 * MIB
    big = feed([(0.0, 0, 4000 * MIB), (1.0, 100_000, 4000 * MIB)])[1]
    assert big == 4096 * MIB


def test_disabled_or_without_readings_nothing_changes() -> None:
    assert feed([(0.0, 0, USE), (1.0, 0, USE)], SenpaiSettings(enabled=False)) == [None, None]
    state = senpai_step(ON, SenpaiState(), psi_some_us=None, usage_bytes=USE, now=0.0)
    assert state == SenpaiState()


@given(st.lists(st.tuples(st.integers(0, 50_000), st.integers(1, 8192)), min_size=2, max_size=30))
def test_each_tick_moves_at_most_one_percent_down_or_double_up(
    readings: list[tuple[int, int]],
) -> None:
    state = SenpaiState()
    psi = 0
    for t, (delta, use_mib) in enumerate(readings):
        psi += delta
        usage = use_mib * MIB
        state = senpai_step(ON, state, psi_some_us=psi, usage_bytes=usage, now=float(t))
        if state.high is not None and ON.min_bytes < state.high < (ON.max_bytes or 0):
            assert usage * 0.99 - 1 <= state.high <= usage * 2 + 1


def test_pressure_target_must_be_positive() -> None:
    with pytest.raises(ValueError, match="memory"):
        SenpaiSettings(pressure_us=0)
