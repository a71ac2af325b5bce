"""The composed controller on recorded signal sequences: growth, blocking, shrink steps,
rollback, freeze and thaw (pure logic, fake clock), with Heracles' plain rules (`PLAIN`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.control.actions import Action, Evict, Freeze, SetCpus, SetQuota, SetWeight, Thaw
from corral.control.attribution import AttributionSettings
from corral.control.bands import BandSettings
from corral.control.baseline import BaselineSettings
from corral.control.ceilings import CeilingSettings
from corral.control.controller import Controller, ControllerSettings, ControllerState
from corral.control.cores import CoresSettings
from corral.control.evict import BeWorkload, EvictSettings
from corral.control.knobs import (
    Direction,
    Hold,
    Knob,
    Trial,
    TrialSettings,
    Verdict,
    judge,
    reference_slack,
)
from corral.control.signals import Observation, Signal, SignalStatus
from corral.control.top import Mode, TopSettings
from corral.control.weight import WeightSettings
from corral.topology.cpuset import CpuSet

# 8 cores without SMT; LC peak 100k requests/s; every period 1 s.
CORES = tuple(CpuSet([i]) for i in range(8))
SMT_CORES = tuple(CpuSet([i, i + 4]) for i in range(4))


PLAIN = {
    "baseline": BaselineSettings(enabled=False),
    "attribution": AttributionSettings(enabled=False),
    "bands": BandSettings(enabled=False),
}
"""Heracles' plain rules (a cold start, every violation BE's, the fixed high-water mark):
the tests in this file pin them; tests/test_control_attribution.py pins the defaults."""


def make(**overrides: object) -> Controller:
    base = {
        **PLAIN,
        "top": TopSettings(period_s=1.0, cooldown_s=3.0, cooldown_backoff=1.0),
        # Heracles judges a shrink against the window that triggered it.
        "trial": TrialSettings(settle_s=1.0, hold_s=10.0, reference_windows=1),
        "cores": CoresSettings(min_cores=1, shrink_step=2),
        "weight": WeightSettings(ladder=("idle", "2", "64")),
        "evict": EvictSettings(freeze_after_periods=1, thaw_interval_s=2.0),
        "sub_period_s": 1.0,
        "peak_rps": 100_000.0,
    }
    base.update(overrides)
    return Controller(ControllerSettings(**base), CORES)  # type: ignore[arg-type]


@dataclass
class Trace:
    states: list[ControllerState]
    actions: list[tuple[Action, ...]]


def replay(
    controller: Controller,
    samples: Sequence[tuple[float, float | None, float]],
    *,
    state: ControllerState | None = None,
    workloads: Sequence[BeWorkload] = (BeWorkload("batch", 0),),
    noisy_at: frozenset[float] = frozenset(),
) -> Trace:
    """Feed (t, p99 ms, rps) and record states and actions."""
    current = state or controller.initial()
    trace = Trace([], [])
    for t, p99, rps in samples:
        obs = Observation(latency_ms=p99, load_rps=rps, noisy=t in noisy_at)
        current, actions = controller.step(current, obs, t, workloads=workloads)
        trace.states.append(current)
        trace.actions.append(actions)
    return trace


def test_first_step_applies_the_whole_initial_box() -> None:
    trace = replay(make(), [(0, 0.3, 20_000)])
    kinds = {type(a) for a in trace.actions[0]}
    assert {SetCpus, SetWeight, SetQuota} <= kinds
    weight = next(a for a in trace.actions[0] if isinstance(a, SetWeight))
    assert weight.idle  # BE starts at the most protective weight


def test_be_grows_one_core_at_a_time_while_slack_is_large() -> None:
    samples = [(float(t), 0.3, 20_000.0) for t in range(8)]
    trace = replay(make(), samples)
    cores = [s.levels.cores for s in trace.states]
    # Each growth is a trial judged one period later before the next step.
    assert cores[0] == 1
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(cores))
    assert cores[-1] > 2


def _shrink_after(history: list[float], after: float, reference_windows: int) -> str:
    """The verdict on a cores shrink taken on a 3%-slack window that follows ``history``
    (p99 ms at the old levels, SLO 1 ms) and is judged on a window of ``after`` ms."""
    controller = make(
        trial=TrialSettings(settle_s=1.0, hold_s=10.0, reference_windows=reference_windows)
    )
    start = replace(
        controller.initial(),
        levels=controller.initial().levels.with_level("cores", 6).with_level("weight", 0),
        applied=True,
        last_top=-1.0,
        last_sub=-1.0,
    )
    samples = [(float(t), p99, 20_000.0) for t, p99 in enumerate([*history, 0.97, after])]
    trace = replay(controller, samples, state=start)
    return trace.states[-1].last_verdict


def test_a_shrink_after_a_lone_short_window_is_judged_against_the_windows_before_it() -> None:
    # Slack 8% for four windows (BE holds: no growth under 10%), one at 3% (the shrink),
    # then 8% again: the step did nothing the host was not already doing (regression to
    # the mean), so it is rolled back.
    verdict = _shrink_after([0.92, 0.92, 0.92, 0.92], after=0.92, reference_windows=5)
    assert verdict.startswith("rolled back shrink cores")
    assert "reference 0.08" in verdict
    # Judged against the trigger alone, the same step looks like it helped and is kept.
    assert _shrink_after([0.92, 0.92, 0.92, 0.92], after=0.92, reference_windows=1) == (
        "kept shrink cores"
    )


def test_a_shrink_under_lasting_pressure_is_kept_when_it_beats_the_windows_before() -> None:
    settings = TrialSettings(settle_s=1.0, reference_windows=5)
    reference = reference_slack(settings, (0.9, 0.04, 0.03, 0.04, 0.03), 0.03)
    assert reference == 0.03  # the median of the last five, the trigger included
    trial = Trial(Knob.CORES, Direction.SHRINK, 6, 4, 0.03, 0.0, reference=reference)

    def verdict(slack: float) -> Verdict:
        return judge(settings, trial, slack=slack, noisy=False, no_grow_slack=0.1, now=2.0)

    assert verdict(0.2) is Verdict.KEEP  # comfortable where the windows before were not
    assert verdict(0.06) is Verdict.KEEP  # 3 points above them
    assert verdict(0.04) is Verdict.ROLLBACK  # no better than they were


def test_growth_is_blocked_when_slack_is_below_ten_percent() -> None:
    controller = make()
    samples = [(float(t), 0.93, 20_000.0) for t in range(6)]  # slack 7%
    trace = replay(controller, samples)
    assert all(s.top.mode is Mode.HOLD for s in trace.states)
    assert all(s.levels.cores == 1 for s in trace.states)


def test_a_growth_step_that_costs_the_margin_is_rolled_back_and_held() -> None:
    controller = make()
    # t=0 initial, t=1 grow cores 1->2 (trial), t=2 latency jumps to slack 8%: rollback.
    trace = replay(controller, [(0, 0.3, 20_000), (1, 0.3, 20_000), (2, 0.92, 20_000)])
    assert trace.states[1].levels.cores == 2
    assert trace.states[1].pending is not None
    assert trace.states[2].levels.cores == 1
    assert "rolled back grow cores" in trace.states[2].last_verdict
    cpus = [a for a in trace.actions[2] if isinstance(a, SetCpus)]
    assert cpus and len(cpus[0].be) == 1
    # With slack back to normal, cores stay held for hold_s (10 s): nothing grows them.
    after = replay(
        controller,
        [(float(t), 0.3, 20_000.0) for t in range(3, 9)],
        state=trace.states[2],
    )
    assert all(s.levels.cores == 1 for s in after.states)


def test_a_kept_growth_step_is_not_undone() -> None:
    trace = replay(make(), [(0, 0.3, 20_000), (1, 0.3, 20_000), (2, 0.32, 20_000)])
    assert trace.states[2].levels.cores >= 2
    assert "kept grow cores" in trace.states[2].last_verdict


def test_small_slack_shrinks_weight_first_then_cores_two_at_a_time() -> None:
    controller = make()
    # Start with BE big: 6 cores at shares=64.
    start = controller.initial()
    start = ControllerState(
        levels=start.levels.with_level("cores", 6).with_level("weight", 2),
        applied=True,
        last_top=-1.0,
        last_sub=-1.0,  # already running: the first step below is not the set-up step
    )
    # slack 3% (< 5%) every period, and shrinking helps (slack recovers a little each time).
    samples = [(float(t), 0.97 if t % 2 == 0 else 0.95, 20_000.0) for t in range(5)]
    trace = replay(controller, samples, state=start)
    levels = [(s.levels.weight, s.levels.cores) for s in trace.states]
    # Weight goes first, one rung per step, each kept because slack rose by 2 points;
    # then cores, two at a time.
    assert levels == [(1, 6), (1, 6), (0, 6), (0, 6), (0, 4)]
    assert trace.states[4].pending is not None
    assert trace.states[4].pending.direction == "shrink"


def test_a_shrink_step_that_did_not_help_is_rolled_back_and_the_next_knob_tried() -> None:
    controller = make()
    start = ControllerState(
        levels=controller.initial().levels.with_level("cores", 4).with_level("weight", 1),
        applied=True,
        last_top=-1.0,
        last_sub=-1.0,  # already running: the first step below is not the set-up step
    )
    # slack stays at 3%: shrinking weight did not help.
    samples = [(0, 0.97, 20_000), (1, 0.97, 20_000), (2, 0.97, 20_000)]
    trace = replay(controller, samples, state=start)
    assert trace.states[0].levels.weight == 0
    assert trace.states[1].levels.weight == 1  # rolled back: BE gets its weight back
    assert "rolled back shrink weight" in trace.states[1].last_verdict
    assert trace.states[2].levels.cores == 2  # next knob: cores, by two


def test_a_violation_drops_be_to_its_floor_at_once() -> None:
    controller = make()
    start = ControllerState(
        levels=controller.initial().levels.with_level("cores", 6).with_level("weight", 2),
        applied=True,
        last_top=-1.0,
        last_sub=-1.0,  # already running: the first step below is not the set-up step
    )
    trace = replay(controller, [(0, 1.5, 20_000)], state=start)
    assert trace.states[0].top.mode is Mode.DISABLE
    assert trace.states[0].levels.cores == 1
    assert trace.states[0].levels.weight == 0


def test_be_is_frozen_when_slack_stays_negative_at_its_floor_and_thawed_after() -> None:
    # Learned ceilings off: this is Heracles' plain freeze / cool-down / thaw cycle (with
    # them, the violation at this load would keep BE off; see test_control_ceilings).
    controller = make(ceilings=CeilingSettings(enabled=False))
    workloads = (BeWorkload("low", 0), BeWorkload("high", 5))
    bad = [(float(t), 1.4, 20_000.0) for t in range(4)]
    good = [(float(t), 0.3, 20_000.0) for t in range(4, 14)]
    trace = replay(controller, bad + good, workloads=workloads)
    freezes = [
        (i, a) for i, acts in enumerate(trace.actions) for a in acts if isinstance(a, Freeze)
    ]
    thaws = [(i, a) for i, acts in enumerate(trace.actions) for a in acts if isinstance(a, Thaw)]
    # Floor reached at t=0; one period later (t=2 > freeze_after_periods=1) the lowest
    # priority goes first, then the next one.
    assert [a.workload for _, a in freezes] == ["low", "high"]
    assert freezes[0][0] == 1
    # Thaw only after the cool-down (3 s after the last violation at t=3), highest
    # priority first, one per thaw interval (2 s).
    assert [a.workload for _, a in thaws] == ["high", "low"]
    assert thaws[0][0] >= 6
    assert thaws[1][0] - thaws[0][0] >= 2
    assert not trace.states[-1].evict.frozen


def test_frozen_be_is_evicted_only_when_eviction_is_on() -> None:
    controller = make(evict=EvictSettings(freeze_after_periods=0, evict=True, evict_after_s=3))
    trace = replay(controller, [(float(t), 1.4, 20_000.0) for t in range(6)])
    verbs = [type(a).__name__ for acts in trace.actions for a in acts]
    assert "Freeze" in verbs and "Evict" in verbs
    assert trace.states[-1].evict.evicted == ("batch",)


def test_load_above_high_water_disables_be_even_with_slack() -> None:
    trace = replay(make(), [(0, 0.3, 20_000), (1, 0.3, 90_000), (2, 0.3, 90_000)])
    assert trace.states[1].top.mode is Mode.DISABLE
    assert any(isinstance(a, Freeze) for a in trace.actions[2])


def test_a_noisy_window_is_neither_a_violation_nor_a_verdict() -> None:
    trace = replay(
        make(), [(0, 0.3, 20_000), (1, 0.3, 20_000), (2, 9.0, 20_000)], noisy_at=frozenset({2})
    )
    assert trace.states[2].top.mode is Mode.HOLD
    assert trace.states[2].pending is not None  # still waiting to be judged


def test_on_smt_hosts_lc_and_be_never_share_a_physical_core() -> None:
    controller = Controller(
        ControllerSettings(top=TopSettings(period_s=1.0), sub_period_s=1.0), SMT_CORES
    )
    state = controller.initial()
    seen = []
    for t in range(10):
        state, actions = controller.step(state, Observation(latency_ms=0.2), float(t))
        seen += [a for a in actions if isinstance(a, SetCpus)]
    assert seen
    for action in seen:
        assert action.be.isdisjoint(action.lc)
        for core in SMT_CORES:
            assert core <= action.be or core.isdisjoint(action.be)
        assert action.lc  # LC keeps at least its reserve


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.floats(0.01, 5.0)), st.floats(0, 120_000), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_levels_always_stay_on_their_ladders(
    samples: list[tuple[float | None, float, bool]],
) -> None:
    controller = make()
    specs = controller.specs()
    state = controller.initial()
    for t, (p99, rps, noisy) in enumerate(samples):
        state, _ = controller.step(
            state, Observation(latency_ms=p99, load_rps=rps, noisy=noisy), float(t)
        )
        for name, spec in specs.items():
            assert spec.floor <= state.levels.get(name) <= spec.top
        if state.top.mode is Mode.DISABLE:
            assert controller.at_floor(state.levels)


_STATUS_LOST = st.sampled_from([SignalStatus.SLOW, SignalStatus.FAILED, SignalStatus.NO_DATA])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(0.01, 5.0)),
            st.floats(0, 120_000),
            st.one_of(st.none(), _STATUS_LOST),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_lost_signal_never_grows_shrinks_freezes_or_disables_be(
    samples: list[tuple[float | None, float, SignalStatus | None]],
) -> None:
    """Whatever came before, a period whose signal is lost (slow, failed, no data) keeps
    every BE level, the pending trial and the frozen set, takes no freeze, thaw or evict
    action and does not start a disable; its mode is hold, saying why."""
    controller = make()
    state = controller.initial()
    workloads = (BeWorkload("batch", 0), BeWorkload("video", 1))
    for t, (p99, rps, status) in enumerate(samples):
        if status is None:
            obs = Observation(
                latency_ms=p99, load_rps=rps, signals=(Signal("api", latency_ms=p99),)
            )
        else:
            obs = Observation(
                latency_ms=p99, load_rps=rps, signals=(Signal("api", status, "gone"),)
            )
        before = state
        state, actions = controller.step(state, obs, float(t), workloads=workloads)
        if status is None:
            continue
        assert state.levels == before.levels
        assert state.pending == before.pending
        assert state.evict == before.evict
        assert state.ceilings == before.ceilings
        assert not any(isinstance(a, Freeze | Thaw | Evict) for a in actions)
        if before.applied:  # a re-render after a refusal writes the same levels again
            assert not any(isinstance(a, SetCpus | SetWeight | SetQuota) for a in actions)
        assert state.top.mode is Mode.HOLD
        assert state.top.reason == "no signal: api: gone"
        assert state.top.disabled_until == before.top.disabled_until


def test_a_cool_down_survives_a_lost_signal_and_resumes_when_it_returns() -> None:
    controller = make()
    trace = replay(controller, [(0, 0.3, 20_000), (1, 5.0, 20_000)])  # violation: disable
    state = trace.states[-1]
    assert state.top.mode is Mode.DISABLE
    lost = Observation(signals=(Signal("api", SignalStatus.FAILED, "connection refused"),))
    state, _ = controller.step(state, lost, 2.0)
    assert state.top.mode is Mode.HOLD
    assert state.top.reason == "no signal: api: connection refused"
    state, _ = controller.step(state, Observation(latency_ms=0.3, load_rps=20_000), 3.0)
    assert state.top.mode is Mode.DISABLE and "cooling down" in state.top.reason


def test_with_no_signal_floor_after_be_goes_to_its_floor_but_is_never_frozen() -> None:
    controller = make(no_signal_floor_after=2)
    grown = controller.initial()
    grown = replace(grown, levels=grown.levels.with_level(Knob.CORES, 5).with_level(Knob.WEIGHT, 1))
    state, _ = controller.step(grown, Observation(latency_ms=0.3, load_rps=20_000), 0.0)
    lost = Observation(signals=(Signal("api", SignalStatus.SLOW, "no answer within 1.0 s"),))
    floors = []
    for t in (1.0, 2.0, 3.0, 4.0):
        state, actions = controller.step(state, lost, t, workloads=(BeWorkload("batch"),))
        floors.append(controller.at_floor(state.levels))
        assert not any(isinstance(a, Freeze | Evict) for a in actions)
    assert floors == [False, False, True, True]  # after 2 periods without a signal
    assert state.no_signal_periods == 4 and state.evict.frozen == ()


def test_knobs_are_an_enum_and_status_keeps_their_names() -> None:
    controller = make()
    assert set(controller.specs()) == set(Knob)
    state = replace(
        controller.initial(),
        pending=Trial(Knob.CORES, Direction.GROW, 1, 2, 0.5, 0.0),
        holds=(Hold(Knob.WEIGHT, Direction.GROW, 10.0),),
    )
    doc = controller.status(state)
    assert doc["pending"]["knob"] == "cores" and type(doc["pending"]["knob"]) is str
    assert doc["holds"][0]["knob"] == "weight"
    assert set(doc["levels"]) == {str(k) for k in Knob}
