"""senpai's law on recorded PSI sequences (pure logic), pinned to senpai.py's formulas
(facebookincubator/senpai at c51e8e21de5c459406a015c1860d5f6c5ff6a426)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.control.memory import (
    MIB,
    SenpaiSettings,
    SenpaiState,
    backoff_factor,
    clamp_limit,
    probe_factor,
    senpai_step,
)

ON = SenpaiSettings(enabled=True, min_bytes=64 * MIB, max_bytes=8192 * MIB)
USE = 1024 * MIB


def run(readings: list[tuple[float, int, int]], settings: SenpaiSettings = ON) -> list[SenpaiState]:
    """Feed (time, cumulative PSI some total us, usage bytes) ticks; every state."""
    state = SenpaiState()
    out = []
    for t, psi, usage in readings:
        state = senpai_step(settings, state, psi_some_us=psi, usage_bytes=usage, now=t)
        out.append(state)
    return out


def test_the_first_reading_sets_the_limit_to_current_use_page_aligned() -> None:
    (first,) = run([(0.0, 500, USE + 123)])
    assert first.high == USE  # memory.current, rounded down to 4 KiB
    assert first.last_psi_us == 500 and first.integral_us == 0


def test_at_twice_the_target_senpai_backs_off_one_percent_of_the_limit() -> None:
    # err = 2, adj = (2 / coeff_backoff 20)^2 * max_backoff 1.0 = 0.01
    assert backoff_factor(ON, 20_000) == pytest.approx(0.01)
    states = run([(0.0, 0, USE), (1.0, 20_000, USE)])
    assert states[1].high == clamp_limit(ON, int(USE + USE * 0.01))
    assert states[1].last_adjust == pytest.approx(0.01)


def test_backoff_reaches_doubling_only_at_twenty_times_the_target() -> None:
    assert backoff_factor(ON, 10 * 10_000) == pytest.approx(0.25)
    assert backoff_factor(ON, 20 * 10_000) == pytest.approx(1.0)
    assert backoff_factor(ON, 100 * 10_000) == 1.0
    states = run([(0.0, 0, USE), (1.0, 1_000_000, USE)])
    assert states[1].high == 2 * USE


def test_backoff_scales_the_current_limit_not_the_current_use() -> None:
    states = run([(0.0, 0, USE), (1.0, 20_000, USE // 2)])
    assert states[1].high == clamp_limit(ON, int(USE * 1.01))


def test_without_pressure_the_probe_waits_out_the_grace_then_takes_one_percent() -> None:
    ticks = [(float(t), 0, USE) for t in range(0, 14)]
    highs = [s.high for s in run(ticks)]
    assert highs[:6] == [USE] * 6  # grace: interval_s = 6 s after the start
    assert highs[6] == clamp_limit(ON, int(USE - USE * 0.01))
    assert highs[7:12] == [highs[6]] * 5  # grace again after the probe
    assert highs[12] == clamp_limit(ON, int(highs[6] * 0.99))  # of the limit, compounding


def test_the_probe_shrinks_with_the_pressure_seen_in_the_interval() -> None:
    # half the target: err = 2, adj = (2 / coeff_probe 10)^2 * 1% = 0.04%
    assert probe_factor(ON, 5_000) == pytest.approx(0.0004)
    assert probe_factor(ON, 1_000) == pytest.approx(0.01)  # 1/10 of the target: the cap
    assert probe_factor(ON, 0) == pytest.approx(0.01)
    ticks = [(float(t), 1_000 * t if t else 0, USE) for t in range(0, 7)]  # 5 ms in 6 s
    final = run(ticks)[-1]
    assert final.pressure_us == 6_000
    assert final.high == clamp_limit(ON, int(USE - USE * probe_factor(ON, 6_000)))


def test_the_integral_accumulates_over_ticks_and_backs_off_as_soon_as_it_passes() -> None:
    ticks = [(0.0, 0, USE), (1.0, 4_000, USE), (2.0, 8_000, USE), (3.0, 12_000, USE)]
    states = run(ticks)
    assert [s.integral_us for s in states] == [0, 4_000, 8_000, 0]
    assert states[2].high == USE  # under the target inside the grace: no change
    assert states[3].high == clamp_limit(ON, int(USE * (1 + backoff_factor(ON, 12_000))))
    assert states[3].grace_until == 3.0 + ON.interval_s


def test_the_grace_period_counts_seconds_at_any_tick_length() -> None:
    ticks = [(2.0 * t, 0, USE) for t in range(0, 5)]  # the controller's 2 s cadence
    highs = [s.high for s in run(ticks)]
    assert highs[:3] == [USE] * 3  # t = 0, 2, 4
    assert highs[3] == clamp_limit(ON, int(USE * 0.99))  # t = 6


def test_a_limit_changed_by_someone_else_restarts_from_current_use() -> None:
    state = run([(0.0, 0, USE)])[0]
    state = senpai_step(
        ON, state, psi_some_us=30_000, usage_bytes=512 * MIB, now=1.0, limit_bytes=USE * 3
    )
    assert state.high == clamp_limit(ON, int(512 * MIB * (1 + backoff_factor(ON, 30_000))))


def test_limit_is_clamped_to_min_and_box_limit_and_page_aligned() -> None:
    small = run([(0.0, 0, 10 * MIB)])[0]
    assert small.high == 64 * MIB
    big = run([(0.0, 0, 8000 * MIB), (1.0, 1_000_000, 8000 * MIB)])[1]
    assert big.high == 8192 * MIB
    assert clamp_limit(ON, 100 * MIB + 4095) == 100 * MIB


def test_disabled_or_without_readings_nothing_changes() -> None:
    assert [s.high for s in run([(0.0, 0, USE), (1.0, 0, USE)], SenpaiSettings())] == [None, None]
    state = senpai_step(ON, SenpaiState(), psi_some_us=None, usage_bytes=USE, now=0.0)
    assert state == SenpaiState()


def test_senpais_defaults_are_the_published_ones() -> None:
    s = SenpaiSettings()
    assert (s.pressure_us, s.interval_s, s.max_probe, s.max_backoff) == (10_000, 6, 0.01, 1.0)
    assert (s.coeff_probe, s.coeff_backoff, s.min_bytes) == (10, 20, 100 * MIB)


@given(st.lists(st.tuples(st.integers(0, 400_000), st.integers(1, 8192)), min_size=2, max_size=40))
def test_each_adjustment_is_at_most_one_percent_down_or_doubling_up(
    readings: list[tuple[int, int]],
) -> None:
    state = SenpaiState()
    psi = 0
    for t, (delta, use_mib) in enumerate(readings):
        psi += delta
        before = state.high
        state = senpai_step(ON, state, psi_some_us=psi, usage_bytes=use_mib * MIB, now=float(t))
        assert state.high is not None and state.high % 4096 == 0
        assert ON.min_bytes <= state.high <= (ON.max_bytes or 0)
        if before is not None and ON.min_bytes < state.high < (ON.max_bytes or 0):
            assert before * 0.99 - 4096 <= state.high <= before * 2


def test_bad_settings_are_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match=r"memory\.pressure_us"):
        SenpaiSettings(pressure_us=0)
    with pytest.raises(ValueError, match=r"memory\.max_probe"):
        SenpaiSettings(max_probe=1.5)
