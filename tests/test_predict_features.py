"""Features and baselines against hand-computed values; the two window paths agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from corral.errors import InputError
from corral.predict.baselines import baseline_predictions, ewma_k
from corral.predict.dataset import future_quantile, select_anchors
from corral.predict.features import FeatureSpec, compute_features, masked_quantile
from corral.predict.forecast import history_windows
from corral.predict.history import UsageHistory
from corral.predict.series import build_trace

MIDNIGHT_THU = 1_375_315_200.0  # 2013-08-01 00:00:00 UTC, a Thursday


def _hand_window(spec: FeatureSpec) -> np.ndarray:
    """Cores: 1, 2, 4 in the last three samples; a day ago 2, then 1 and 3; else missing."""
    window = np.full((1, spec.lookback), np.nan)
    window[0, -3:] = [1.0, 2.0, 4.0]
    window[0, 0] = 2.0
    window[0, 1:3] = [1.0, 3.0]
    return window


def test_features_match_hand_computed_values() -> None:
    spec = FeatureSpec()
    assert spec.lookback == 289
    timestamp = MIDNIGHT_THU + 13.5 * 3600
    row = compute_features(spec, _hand_window(spec), np.array([4.0]), np.array([timestamp]))[0]
    f = dict(zip(spec.names(), row, strict=True))
    assert (f["lag_0"], f["lag_1"], f["lag_2"]) == (1.0, 0.5, 0.25)
    assert np.isnan(f["lag_3"]) and np.isnan(f["lag_4"])
    # Last 15 minutes: shares 0.25, 0.5, 1.0.
    assert f["mean_900s"] == pytest.approx(1.75 / 3)
    assert f["median_900s"] == 0.5
    assert f["max_900s"] == 1.0
    assert f["p95_900s"] == pytest.approx(0.5 + 0.9 * 0.5)  # position 1.9 of 0..2
    # Last day (288 samples): 0.25, 0.75 (yesterday's horizon) and the last three.
    assert f["mean_86400s"] == pytest.approx(2.75 / 5)
    assert f["median_86400s"] == 0.5
    assert f["p95_86400s"] == pytest.approx(0.75 + 0.8 * 0.25)  # position 3.8 of 0..4
    assert f["day_ago"] == 0.5
    assert f["day_ago_horizon_max"] == 0.75
    assert f["observed_share"] == pytest.approx(5 / 288)
    assert f["std_3600s"] == pytest.approx(np.std([0.25, 0.5, 1.0]))
    assert f["hour_of_day"] == 13.5
    assert f["day_of_week"] == 3.0
    assert f["capacity_cores"] == 4.0


def test_baselines_match_hand_computed_values() -> None:
    spec = FeatureSpec()
    window = _hand_window(spec)
    got = baseline_predictions(spec, window, np.array([4.0]), 0.95)
    assert got["last_value"][0] == 4.0
    assert got["max_1h"][0] == 4.0
    assert got["p95_1h"][0] == pytest.approx(2.0 + 0.9 * 2.0)
    assert got["request"][0] == 4.0
    weights = 0.5 ** (np.array([288, 287, 286, 2, 1, 0]) * 300 / 3600)
    values = np.array([2.0, 1.0, 3.0, 1.0, 2.0, 4.0])
    mean = np.average(values, weights=weights)
    std = np.sqrt(np.average((values - mean) ** 2, weights=weights))
    assert got["ewma_kstd"][0] == pytest.approx(min(4.0, mean + ewma_k(0.95) * std))
    assert ewma_k(0.95) == pytest.approx(1.6449, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 5), st.integers(1, 12)),
        elements=st.one_of(st.just(np.nan), st.floats(0, 64, allow_nan=False)),
    ),
    st.floats(0, 1),
)
def test_masked_quantile_equals_numpy_nanquantile(values: np.ndarray, q: float) -> None:
    got = masked_quantile(values, q)
    for row, value in zip(values, got, strict=True):
        if np.isnan(row).all():
            assert np.isnan(value)
        else:
            assert value == pytest.approx(np.nanquantile(row, q), rel=1e-9, abs=1e-12)


def test_history_bins_put_samples_at_their_age() -> None:
    spec = FeatureSpec()
    now = 10_000.0
    history = UsageHistory.of(
        [now, now - 10, now - 299, now - 300, now - 905, now + 5], [1, 2, 3, 8, 5, 99], 4.0
    )
    windows, observed = history_windows(spec, [history], now)
    assert windows[0, -1] == pytest.approx(2.0)  # mean of ages 0, 10 and 299
    assert windows[0, -2] == 8.0
    assert np.isnan(windows[0, -3])
    assert windows[0, -4] == 5.0
    assert observed[0] == 3


def test_training_and_live_windows_give_the_same_features() -> None:
    rng = np.random.default_rng(3)
    times = MIDNIGHT_THU + 300.0 * np.arange(400)
    usage = rng.uniform(0, 2, size=400)
    usage[[50, 51, 390]] = np.nan  # missing samples
    keep = ~np.isnan(usage)
    frame = pd.DataFrame(
        {"id": "w", "timestamp_s": times[keep], "usage_cores": usage[keep], "capacity_cores": 2.0}
    )
    trace = build_trace(frame, source="mem", fmt="corral")
    spec = FeatureSpec(step_s=trace.step_s)
    anchor = np.array([trace.usage.size - 1], dtype=np.int64)
    offline = compute_features(
        spec, trace.windows(anchor, spec.lookback), np.array([2.0]), np.array([times[-1]])
    )
    live_windows, _ = history_windows(
        spec, [UsageHistory.of(times[keep], usage[keep], 2.0)], float(times[-1])
    )
    live = compute_features(spec, live_windows, np.array([2.0]), np.array([times[-1]]))
    np.testing.assert_allclose(live, offline, equal_nan=True)


def test_windows_never_mix_series_and_targets_need_a_whole_horizon() -> None:
    frame = pd.DataFrame(
        {
            "id": ["a"] * 4 + ["b"] * 5,
            "timestamp_s": [0, 300, 600, 900, 0, 300, 900, 1200, 1500],
            "usage_cores": [1, 2, 3, 4, 5, 6, 7, 8, 9],
            "capacity_cores": 10.0,
        }
    )
    trace = build_trace(frame, source="mem", fmt="corral")
    first_of_b = int(trace.offsets[1])
    window = trace.windows(np.array([first_of_b]), before=3, after=1)
    np.testing.assert_array_equal(window, [[np.nan, np.nan, 5.0, 6.0]])
    spec = FeatureSpec(step_s=300.0, horizon_s=600.0)
    anchors = select_anchors(trace, spec)
    # a: 0 and 300 s have two samples ahead; b: only 900 s (600 s is missing).
    assert [int(i) for i in anchors] == [0, 1, first_of_b + 3]
    np.testing.assert_allclose(future_quantile(trace, spec, anchors[:1], 0.95), [2.0 + 0.95 * 1.0])


def test_a_horizon_shorter_than_the_step_is_refused() -> None:
    with pytest.raises(InputError, match="--horizon-s"):
        FeatureSpec(step_s=300.0, horizon_s=60.0)
