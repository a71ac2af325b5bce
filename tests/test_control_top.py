"""The top controller: slack, high/low water marks, cool-down (pure logic)."""

from __future__ import annotations

import pytest

from corral.control.slo import Slo, percentile
from corral.control.top import Mode, TopSettings, TopState, top_step
from corral.errors import InputError

SETTINGS = TopSettings(period_s=1.0, cooldown_s=5.0)


def run(sequence: list[tuple[float, float | None, float | None]]) -> list[Mode]:
    """Feed (t, slack, load) and return the mode after each."""
    state = TopState()
    modes = []
    for t, slack, load in sequence:
        state = top_step(SETTINGS, state, slack=slack, load=load, now=t)
        modes.append(state.mode)
    return modes


def test_slack_is_distance_to_the_slo_as_a_fraction_of_it() -> None:
    slo = Slo(target_ms=1.0)
    assert slo.slack(0.25) == pytest.approx(0.75)
    assert slo.slack(1.5) == pytest.approx(-0.5)
    assert slo.violated(1.01) and not slo.violated(1.0)


def test_heracles_bands_grow_hold_shrink_disable() -> None:
    modes = run([(0, 0.5, 0.3), (1, 0.08, 0.3), (2, 0.03, 0.3), (3, -0.1, 0.3)])
    assert modes == [Mode.GROW, Mode.HOLD, Mode.SHRINK, Mode.DISABLE]


def test_negative_slack_disables_be_for_the_whole_cool_down() -> None:
    # violation at t=1, then great slack: BE stays disabled until t=1+5.
    modes = run([(0, 0.5, 0.2), (1, -0.2, 0.2), *[(t, 0.6, 0.2) for t in range(2, 8)]])
    assert modes[1:6] == [Mode.DISABLE] * 5
    assert modes[6] is Mode.GROW  # t=6: cool-down over


def test_load_above_high_water_disables_until_below_low_water() -> None:
    modes = run(
        [
            (0, 0.5, 0.5),
            (10, 0.5, 0.86),  # above 85%: disable
            (20, 0.5, 0.83),  # between the marks: stays disabled (hysteresis)
            (30, 0.5, 0.81),
            (32, 0.5, 0.79),  # below 80% but cooling down (until 35)
            (40, 0.5, 0.79),  # allowed again
        ]
    )
    assert modes == [Mode.GROW, *[Mode.DISABLE] * 4, Mode.GROW]


def test_no_latency_samples_never_grows_be() -> None:
    assert run([(0, None, 0.2)]) == [Mode.HOLD]


def test_settings_refuse_inverted_water_marks() -> None:
    with pytest.raises(InputError, match="low_water"):
        TopSettings(high_water=0.8, low_water=0.85)
    with pytest.raises(InputError, match="shrink_slack"):
        TopSettings(shrink_slack=0.2, no_grow_slack=0.1)


def test_slo_refuses_a_percentile_outside_0_100() -> None:
    with pytest.raises(InputError, match=r"slo\.percentile"):
        Slo(percentile=100.0)


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([3.0], 99) == 3.0
