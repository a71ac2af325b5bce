"""Learned load ceilings and the cool-down back-off (pure logic, fake clock)."""

from __future__ import annotations

import pytest

from corral.control.actions import Freeze, Thaw
from corral.control.ceilings import RUN, Ceiling, CeilingSettings, blocking, learn
from corral.control.controller import ControllerState
from corral.control.evict import BeWorkload
from corral.control.top import Mode, TopSettings, TopState, top_step
from corral.errors import InputError
from tests.test_control_controller import make, replay

SETTINGS = CeilingSettings(margin=0.05, memory_s=100.0)


def test_a_ceiling_blocks_its_level_and_above_only_near_the_load_where_it_broke() -> None:
    ceilings = learn(SETTINGS, (), {"cores": 3}, load=0.4, now=0.0)
    assert ceilings == (Ceiling("cores", 3, 0.4, 100.0),)
    assert blocking(SETTINGS, ceilings, "cores", 3, load=0.36, now=1.0) is not None
    assert blocking(SETTINGS, ceilings, "cores", 5, load=0.9, now=1.0) is not None
    assert blocking(SETTINGS, ceilings, "cores", 3, load=0.34, now=1.0) is None  # quieter LC
    assert blocking(SETTINGS, ceilings, "cores", 2, load=0.9, now=1.0) is None  # lower level
    assert blocking(SETTINGS, ceilings, "weight", 3, load=0.9, now=1.0) is None
    assert blocking(SETTINGS, ceilings, "cores", 3, load=None, now=1.0) is not None
    assert blocking(SETTINGS, ceilings, "cores", 3, load=0.4, now=100.0) is None  # expired
    off = CeilingSettings(enabled=False)
    assert blocking(off, ceilings, "cores", 3, load=0.9, now=1.0) is None
    assert learn(off, (), {"cores": 3}, load=0.4, now=0.0) == ()


def test_relearning_keeps_the_lower_load_and_the_later_expiry_and_drops_expired() -> None:
    first = learn(SETTINGS, (), {"cores": 3, "weight": 1}, load=0.5, now=0.0)
    second = learn(SETTINGS, first, {"cores": 3}, load=0.6, now=50.0)
    assert Ceiling("cores", 3, 0.5, 150.0) in second
    third = learn(SETTINGS, second, {"cores": 4}, load=None, now=120.0)
    assert {(c.knob, c.level) for c in third} == {("cores", 3), ("cores", 4)}  # weight expired


def test_bad_ceiling_settings_name_the_field() -> None:
    with pytest.raises(InputError, match=r"ceilings\.margin"):
        CeilingSettings(margin=1.5)
    with pytest.raises(InputError, match=r"ceilings\.memory_s"):
        CeilingSettings(memory_s=0)


def test_cool_down_doubles_for_violations_in_a_row_and_resets_after_be_ran_calmly() -> None:
    top = TopSettings(period_s=1.0, cooldown_s=2.0, cooldown_backoff=2.0, max_cooldown_s=10.0)
    state = TopState()
    untils = []
    for now in (0.0, 3.0, 8.0, 17.0):  # each violation just after BE came back
        state = top_step(top, state, slack=-0.1, load=0.3, now=now)
        untils.append(state.disabled_until - now)
        state = top_step(top, state, slack=0.5, load=0.3, now=state.disabled_until)
        assert state.mode is Mode.GROW
    assert untils == [2.0, 4.0, 8.0, 10.0]  # capped at max_cooldown_s
    # BE back at 27 and a violation at 28, 11 s after the last: BE ran 1 s since its
    # cool-down ended, which is no calm spell (measured from the violation, a maximal
    # cool-down would reset the back-off every time BE came back from one).
    state = top_step(top, state, slack=-0.1, load=0.3, now=28.0)
    assert state.strikes == 5 and state.disabled_until == 38.0
    # A violation while BE is off is the LC's or the host's: no strike, no longer cool-down.
    state = top_step(top, state, slack=-0.1, load=0.3, now=29.0)
    assert state.strikes == 5 and state.disabled_until == 38.0
    assert "with BE disabled" in state.reason
    state = top_step(top, state, slack=0.5, load=0.3, now=38.0)
    assert state.mode is Mode.GROW
    # 12 s of BE running without a violation is a calm spell: the back-off starts again.
    state = top_step(top, state, slack=-0.1, load=0.3, now=50.0)
    assert state.disabled_until == 52.0 and state.strikes == 1
    assert state.mode is Mode.DISABLE and "cool-down 2 s" in state.reason
    with pytest.raises(InputError, match=r"top\.max_cooldown_s"):
        TopSettings(cooldown_s=60.0, max_cooldown_s=30.0)
    with pytest.raises(InputError, match=r"top\.cooldown_backoff"):
        TopSettings(cooldown_backoff=0.5)


def test_after_a_violation_be_regrows_only_to_below_the_level_that_broke_the_slo() -> None:
    controller = make()
    start = ControllerState(
        levels=controller.initial().levels.with_level("cores", 4),
        applied=True,
        last_top=-1.0,
        last_sub=-1.0,
    )
    # 40% load: BE at 4 cores breaks the SLO; then LC is comfortable again at the same load.
    samples = [(0.0, 1.5, 40_000.0)] + [(float(t), 0.3, 40_000.0) for t in range(1, 30)]
    trace = replay(controller, samples, state=start)
    assert trace.states[0].ceilings == (Ceiling("cores", 4, 0.4, 600.0),)
    cores = [s.levels.cores for s in trace.states]
    assert cores[0] == 1  # disabled: floor at once
    assert max(cores[5:]) == 3  # grew back after the cool-down, but not into 4 at 40%
    assert "ceilings" in controller.status(trace.states[-1])
    # The same history at 20% load: the ceiling learned at 40% does not hold BE back.
    quiet = replay(
        controller, [(float(t), 0.3, 20_000.0) for t in range(30, 60)], state=trace.states[-1]
    )
    assert max(s.levels.cores for s in quiet.states) > 4


def test_a_growth_rolled_back_for_eating_the_margin_becomes_a_ceiling() -> None:
    controller = make()
    # Grows 1 -> 2 at t=1 (slack 0.7), then slack falls to 0.05 < no-grow: rolled back.
    trace = replay(controller, [(0.0, 0.3, 50_000.0), (1.0, 0.3, 50_000.0), (2.0, 0.95, 50_000.0)])
    assert [s.levels.cores for s in trace.states] == [1, 2, 1]
    assert trace.states[-1].ceilings == (Ceiling("cores", 2, 0.5, 602.0),)


def test_be_that_broke_the_slo_at_its_floor_stays_off_near_that_load_only() -> None:
    assert not CeilingSettings().floor  # opt-in: see CeilingSettings.floor
    controller = make(ceilings=CeilingSettings(floor=True))
    workloads = (BeWorkload("batch", 0),)
    # BE at its floor, 60% load: LC misses its SLO once, then is comfortable.
    samples = [(0.0, 0.3, 60_000.0), (1.0, 1.4, 60_000.0)]
    samples += [(float(t), 0.3, 60_000.0) for t in range(2, 12)]
    trace = replay(controller, samples, workloads=workloads)
    assert trace.states[1].ceilings == (Ceiling(RUN, 1, 0.6, 601.0),)
    assert all(s.top.mode is Mode.DISABLE for s in trace.states[1:])
    assert "where BE at its floor broke the SLO" in trace.states[-1].top.reason
    acts = [a for step in trace.actions for a in step]
    assert any(isinstance(a, Freeze) for a in acts) and not any(isinstance(a, Thaw) for a in acts)
    # The load falls to 40%: below the ceiling's margin, BE is thawed and runs again.
    later = replay(
        controller,
        [(float(t), 0.3, 40_000.0) for t in range(12, 16)],
        state=trace.states[-1],
        workloads=workloads,
    )
    assert later.states[-1].top.mode is Mode.GROW
    assert any(isinstance(a, Thaw) for step in later.actions for a in step)


def test_be_steps_down_before_the_load_reaches_a_levels_ceiling() -> None:
    controller = make()
    start = ControllerState(
        levels=controller.initial().levels.with_level("cores", 5),
        ceilings=(Ceiling("cores", 4, 0.5, 1000.0),),
        applied=True,
        last_top=-1.0,
        last_sub=-1.0,
    )
    # Comfortable slack throughout; the load rises from 30% to 48% (within the 5% margin).
    trace = replay(controller, [(0.0, 0.3, 30_000.0), (1.0, 0.3, 48_000.0)], state=start)
    assert trace.states[0].levels.cores >= 5  # far from the ceiling: BE keeps its cores
    assert trace.states[1].levels.cores == 3  # stepped down below the ceiling's level
    assert trace.states[1].top.mode is Mode.GROW  # no violation was needed for it
    cpus = [a for a in trace.actions[1] if type(a).__name__ == "SetCpus"]
    assert cpus and "near a learned ceiling" in cpus[0].reason
