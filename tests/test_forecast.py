"""The demand forecaster: known trends, periods and noise; degenerate input; properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockpool.forecast import (
    MAX_COUNT,
    Forecast,
    autocorrelation,
    clean,
    confidence,
    demand_windows,
    detect_period,
    expected_concurrency,
    forecast,
    trend,
)

NAN = math.nan
INF = math.inf


def _seasonal(
    n: int, period: int, *, level: float = 5.0, slope: float = 0.0, amp: float = 3.0, noise: float = 0.0
) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(0)
    x = np.arange(n)
    return level + slope * x + amp * np.sin(2 * np.pi * x / period) + rng.normal(0.0, noise, n)


def _spikes(n: int, every: int) -> npt.NDArray[np.float64]:
    y = np.zeros(n)
    y[::every] = 1.0
    return y


# --------------------------------------------------------------------------- clean / windows


def test_clean_zeroes_non_finite_and_negative_and_caps_huge() -> None:
    np.testing.assert_array_equal(
        clean([1.0, NAN, -2.0, INF, -INF, 1e300]), [1.0, 0.0, 0.0, 0.0, 0.0, MAX_COUNT]
    )


def test_clean_copies_its_input() -> None:
    a = np.array([NAN, 1.0])
    clean(a)
    assert math.isnan(a[0])


@pytest.mark.parametrize(
    ("times", "window_s", "duration_s", "expected"),
    [
        pytest.param([], 1.0, None, [], id="empty"),
        pytest.param([], 1.0, 3.0, [0, 0, 0], id="empty-with-duration"),
        pytest.param([0.0, 0.4, 0.99, 1.0, 2.5], 1.0, None, [3, 1, 1], id="edges-belong-to-the-next-window"),
        pytest.param([0.1, 5.0], 2.0, None, [1, 0, 1], id="gap-is-zero"),
        pytest.param([0.1], 1.0, 2.5, [1, 0, 0], id="duration-pads-idle-tail"),
        pytest.param([0.1, 3.2], 1.0, 1.0, [1, 0, 0, 1], id="times-past-duration-kept"),
        pytest.param([NAN, -1.0, INF, 0.5], 1.0, None, [1], id="invalid-times-dropped"),
    ],
)
def test_demand_windows(
    times: list[float], window_s: float, duration_s: float | None, expected: list[float]
) -> None:
    got = demand_windows(times, window_s=window_s, duration_s=duration_s)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("window_s", [0.0, -1.0, NAN, INF])
def test_demand_windows_rejects_bad_window(window_s: float) -> None:
    with pytest.raises(ValueError, match="window_s"):
        demand_windows([1.0], window_s=window_s)


def test_demand_windows_rejects_unbounded_series() -> None:
    with pytest.raises(ValueError, match="max_windows"):
        demand_windows([1e9], window_s=1.0, max_windows=1000)


# --------------------------------------------------------------------------- trend


@pytest.mark.parametrize(
    ("series", "slope", "intercept"),
    [
        pytest.param([], 0.0, 0.0, id="empty"),
        pytest.param([3.0], 0.0, 3.0, id="one-point"),
        pytest.param([2.0] * 7, 0.0, 2.0, id="constant"),
        pytest.param([0.0] * 5, 0.0, 0.0, id="zeros"),
        pytest.param([1.0, 3.0, 5.0, 7.0], 2.0, 1.0, id="exact-line"),
        pytest.param([9.0, 6.0, 3.0, 0.0], -3.0, 9.0, id="falling"),
        pytest.param([NAN, 1.0, 2.0, 3.0], 1.0, 0.0, id="nan-is-zero"),
        pytest.param([-5.0, 1.0, 2.0, 3.0], 1.0, 0.0, id="negative-is-zero"),
    ],
)
def test_trend_table(series: list[float], slope: float, intercept: float) -> None:
    got = trend(series)
    assert got.slope == pytest.approx(slope, abs=1e-12)
    assert got.intercept == pytest.approx(intercept, abs=1e-12)


def test_trend_constant_is_exactly_flat() -> None:
    # Not 1e-16: a flat series must not look like a (tiny) trend to the next-use solver.
    assert trend([2.0] * 4) == (0.0, 2.0)


def test_trend_recovers_noisy_line() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(500)
    got = trend(3.0 + 0.25 * x + rng.normal(0.0, 0.5, x.size))
    assert got.slope == pytest.approx(0.25, abs=0.002)
    assert got.intercept == pytest.approx(3.0, abs=0.1)


def test_trend_matches_polyfit() -> None:
    rng = np.random.default_rng(0)
    y = rng.gamma(2.0, 2.0, 300)
    np.testing.assert_allclose(tuple(trend(y)), np.polyfit(np.arange(y.size), y, 1), rtol=1e-9)


# --------------------------------------------------------------------------- period


def test_autocorrelation_is_one_at_lag_zero() -> None:
    acf = autocorrelation(_seasonal(60, 6, noise=0.1))
    assert acf[0] == pytest.approx(1.0)
    assert np.all(np.abs(acf) <= 1.0 + 1e-12)
    assert acf[6] > 0.8 > -0.8 > acf[3]


@pytest.mark.parametrize(
    "series",
    [
        pytest.param([], id="empty"),
        pytest.param([4.0], id="one-point"),
        pytest.param([4.0] * 10, id="constant"),
        pytest.param(np.arange(50.0), id="straight-line"),
    ],
)
def test_autocorrelation_without_structure_is_zero(series: npt.ArrayLike) -> None:
    acf = autocorrelation(series)
    assert acf.shape == (np.size(series),)
    assert not acf.any()


@pytest.mark.parametrize(
    ("series", "period"),
    [
        pytest.param(_seasonal(120, 12, noise=0.3), 12, id="sine-12-noisy"),
        pytest.param(_seasonal(120, 12, slope=0.2, noise=0.3), 12, id="sine-12-on-a-trend"),
        pytest.param(np.tile([5.0, 5.0, 5.0, 0.0, 0.0, 0.0, 0.0], 10), 7, id="square-7"),
        pytest.param(_spikes(100, 10), 10, id="sparse-spikes-10"),
        pytest.param(np.tile([3.0, 1.0], 20), 2, id="alternating"),
        pytest.param(_seasonal(48, 24), 24, id="exactly-two-cycles"),
        pytest.param(np.random.default_rng(0).normal(5.0, 1.0, 200), None, id="white-noise"),
        pytest.param(np.arange(100.0), None, id="line"),
        pytest.param([3.0] * 30, None, id="constant"),
        pytest.param([0.0] * 30, None, id="zeros"),
        pytest.param([], None, id="empty"),
        pytest.param([1.0], None, id="one-point"),
        pytest.param([1.0, 2.0, 1.0], None, id="too-short-for-two-cycles"),
    ],
)
def test_detect_period_table(series: npt.ArrayLike, period: int | None) -> None:
    got = detect_period(series)
    assert got.period == period
    if period is None:
        assert got.strength == 0.0
    else:
        assert 0.3 <= got.strength <= 1.0


def test_detect_period_prefers_fundamental_over_multiples() -> None:
    # Lags 6, 12 and 18 all peak; 6 is the period.
    assert detect_period(_seasonal(120, 6, noise=0.2)).period == 6


def test_detect_period_respects_bounds() -> None:
    series = _seasonal(120, 12, noise=0.1)
    assert detect_period(series, max_period=10).period is None
    assert detect_period(series, min_strength=0.99).period is None


# --------------------------------------------------------------------------- confidence


@pytest.mark.parametrize(
    ("series", "fitted", "expected"),
    [
        pytest.param([], None, 0.0, id="empty"),
        pytest.param([5.0], None, 0.0, id="one-point"),
        pytest.param([2.0] * 4, None, 0.75, id="constant-shrunk-by-length"),
        pytest.param([0.0] * 10, None, 0.9, id="zeros-confidently-nothing"),
        pytest.param([1.0, 3.0], None, (1 / 1.5) * 0.5, id="cv-one-half"),
        pytest.param([1.0, 3.0], [1.0, 3.0], 0.5, id="perfect-fit"),
        pytest.param([0.0, 0.0], [1.0, 1.0], 0.0, id="residuals-around-nothing"),
        pytest.param([NAN, 2.0, 2.0, 2.0], [0.0, 2.0, 2.0, 2.0], 0.75, id="nan-is-zero"),
    ],
)
def test_confidence_table(series: list[float], fitted: list[float] | None, expected: float) -> None:
    assert confidence(series, fitted) == pytest.approx(expected)


def test_confidence_falls_with_noise() -> None:
    rng = np.random.default_rng(0)
    base = np.full(200, 10.0)
    values = [confidence(base + rng.normal(0.0, sigma, base.size)) for sigma in (0.1, 1.0, 3.0)]
    assert values[0] > values[1] > values[2]
    # cv = 1.0 / 10: confidence = 1 / 1.1 * (1 - 1/200)
    assert values[1] == pytest.approx(1 / 1.1 * (1 - 1 / 200), rel=0.02)


def test_confidence_rejects_misshapen_fit() -> None:
    with pytest.raises(ValueError, match="points"):
        confidence([1.0, 2.0, 3.0], [1.0, 2.0])


# --------------------------------------------------------------------------- forecast


def test_forecast_trend_and_season() -> None:
    n, period = 120, 12
    series = _seasonal(n, period, slope=0.1, noise=0.3)
    got = forecast(series, window_s=2.0)
    truth_next = 5.0 + 0.1 * n + 3.0 * math.sin(2 * math.pi * n / period)
    assert got.period == period
    assert got.trend_slope == pytest.approx(0.1, abs=0.01)
    assert got.expected_next == pytest.approx(truth_next, abs=0.5)
    assert got.seasonal_strength > 0.8
    assert got.confidence > 0.9
    assert got.next_use_s == 0.0
    # Two residual sigmas (noise 0.3) above the expectation.
    assert got.expected_peak - got.expected_next == pytest.approx(0.6, abs=0.15)


def test_forecast_noise_lowers_confidence_and_widens_peak() -> None:
    quiet = forecast(_seasonal(120, 12, noise=0.1), window_s=1.0)
    loud = forecast(_seasonal(120, 12, noise=2.0), window_s=1.0)
    assert quiet.confidence > loud.confidence
    assert loud.expected_peak - loud.expected_next > quiet.expected_peak - quiet.expected_next


@pytest.mark.parametrize(
    ("n", "windows_until_spike"),
    [
        pytest.param(50, 0, id="spike-due-next-window"),
        pytest.param(43, 7, id="spike-in-7-windows"),
        pytest.param(49, 1, id="spike-in-1-window"),
    ],
)
def test_forecast_next_use_follows_the_season(n: int, windows_until_spike: int) -> None:
    got = forecast(_spikes(n, 10), window_s=2.0)
    assert got.period == 10
    assert got.next_use_s == pytest.approx(2.0 * windows_until_spike)
    if windows_until_spike:
        assert got.expected_next < 0.5
    else:
        assert got.expected_next == pytest.approx(1.0, abs=0.1)


def test_forecast_next_use_solves_a_rising_trend() -> None:
    # 0.03 per window: the line reaches half an acquisition at window 16.7, i.e. 7 windows on.
    got = forecast(0.03 * np.arange(10), window_s=0.5)
    assert got.period is None
    assert got.next_use_s == pytest.approx(7 * 0.5)


def test_forecast_falling_demand_expects_none() -> None:
    got = forecast(np.arange(20.0)[::-1], window_s=1.0)
    assert got.expected_next == 0.0
    assert got.next_use_s is None
    assert got.trend_slope == pytest.approx(-1.0)


EMPTY = Forecast(0.0, 0.0, None, 0.0, 0.0, None, 0.0, 0.0)


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        pytest.param([], EMPTY, id="empty"),
        pytest.param([NAN], Forecast(0.0, 0.0, None, 0.0, 0.0, None, 0.0, 0.0), id="only-nan"),
        pytest.param([3.0], Forecast(0.0, 3.0, None, 0.0, 0.0, 0.0, 3.0, 3.0), id="one-point"),
        pytest.param([2.0] * 4, Forecast(0.0, 2.0, None, 0.0, 0.75, 0.0, 2.0, 2.0), id="constant"),
        pytest.param([0.0] * 10, Forecast(0.0, 0.0, None, 0.0, 0.9, None, 0.0, 0.0), id="all-zeros"),
        pytest.param(
            [INF, -INF, NAN, -1.0], Forecast(0.0, 0.0, None, 0.0, 0.75, None, 0.0, 0.0), id="all-invalid"
        ),
        pytest.param([NAN, 2.0, NAN, 2.0], None, id="nan-between-values"),
    ],
)
def test_forecast_degenerate_input(series: list[float], expected: Forecast | None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = forecast(series, window_s=1.0)
    assert caught == []
    if expected is not None:
        assert got == expected
    assert got == forecast(clean(series), window_s=1.0)  # NaN means 0, documented


@pytest.mark.parametrize("window_s", [0.0, -1.0, NAN])
def test_forecast_rejects_bad_window(window_s: float) -> None:
    with pytest.raises(ValueError, match="window_s"):
        forecast([1.0], window_s=window_s)


@pytest.mark.parametrize(
    ("demand", "window_s", "hold_s", "expected"),
    [
        pytest.param(10.0, 1.0, 0.2, 2.0, id="littles-law"),
        pytest.param(10.0, 2.0, 0.2, 1.0, id="wider-window"),
        pytest.param(-1.0, 1.0, 1.0, 0.0, id="negative-demand"),
        pytest.param(1.0, 1.0, -1.0, 0.0, id="negative-hold"),
        pytest.param(1e308, 1e-300, 1e10, 0.0, id="overflow-is-zero"),
    ],
)
def test_expected_concurrency(demand: float, window_s: float, hold_s: float, expected: float) -> None:
    assert expected_concurrency(demand, window_s=window_s, hold_s=hold_s) == pytest.approx(expected)


def test_expected_concurrency_rejects_bad_window() -> None:
    with pytest.raises(ValueError, match="window_s"):
        expected_concurrency(1.0, window_s=0.0, hold_s=1.0)


# --------------------------------------------------------------------------- properties

counts = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
anything = st.floats(allow_nan=True, allow_infinity=True)
windows = st.floats(min_value=1e-3, max_value=1e3)


def _assert_sane(got: Forecast, n: int) -> None:
    for value in (got.trend_slope, got.trend_intercept, got.expected_next, got.expected_peak):
        assert math.isfinite(value)
    assert got.expected_next >= 0.0
    assert got.expected_peak >= got.expected_next
    assert 0.0 <= got.confidence <= 1.0
    assert 0.0 <= got.seasonal_strength <= 1.0 + 1e-9
    assert got.next_use_s is None or (math.isfinite(got.next_use_s) and got.next_use_s >= 0.0)
    assert got.period is None or 2 <= got.period <= n // 2


@settings(deadline=None)
@given(st.lists(counts, max_size=200), windows)
def test_forecast_is_finite_and_non_negative(series: list[float], window_s: float) -> None:
    _assert_sane(forecast(series, window_s=window_s), len(series))


@settings(deadline=None)
@given(st.lists(anything, max_size=100))
def test_forecast_survives_any_floats(series: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_sane(forecast(series, window_s=1.0), len(series))


@given(st.lists(anything, max_size=50), st.one_of(st.none(), st.lists(anything, min_size=50, max_size=50)))
def test_confidence_is_a_probability(series: list[float], fitted: list[float] | None) -> None:
    fit = None if fitted is None else fitted[: len(series)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0.0 <= confidence(series, fit) <= 1.0


@given(
    st.lists(st.floats(min_value=0.0, max_value=1e3), max_size=200), st.floats(min_value=1e-2, max_value=1e3)
)
def test_demand_windows_counts_every_valid_time(times: list[float], window_s: float) -> None:
    got = demand_windows(times, window_s=window_s)
    assert got.sum() == len(times)
    assert got.size == (int(max(times) // window_s) + 1 if times else 0)


@given(st.lists(counts, min_size=2, max_size=100), st.floats(min_value=0.1, max_value=100.0))
def test_trend_is_scale_equivariant(series: list[float], factor: float) -> None:
    a = trend(series)
    b = trend(np.asarray(series) * factor)
    scale = max(max(series), 1.0) * factor
    np.testing.assert_allclose(
        [b.slope, b.intercept], [a.slope * factor, a.intercept * factor], atol=1e-9 * scale
    )
