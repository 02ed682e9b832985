"""Demand forecasting for predictive scaling: pure numpy functions, no I/O, no clock.

A *demand series* counts acquisitions of one service per window of ``window_s`` seconds,
oldest window first (:func:`demand_windows` builds one from acquisition times). From it
:func:`forecast` fits

* a **trend** by least squares (:func:`trend`: slope in acquisitions per window, per window),
* a **period** by autocorrelation of the detrended series (:func:`detect_period`),
* a **confidence** from the coefficient of variation of what the model leaves unexplained
  (:func:`confidence`),

and predicts the next window: the expected demand, an upper estimate of its peak, and the
time until demand is next expected. :func:`expected_concurrency` turns a demand into a number
of instances (Little's law), which is what the pool sizes.

Input hygiene, the same in every function: the series is flattened to float64; NaN, infinities
and negative values count as ``0`` (a window with no usable observation is a window with no
demand), and values are capped at ``MAX_COUNT`` so no arithmetic can overflow. No function here
emits a warning on degenerate input (empty, one point, constant, all zeros).

The pool's scaler calls, per service and tick::

    fc = forecast(recorder.demand(name, t_rel=now_rel), window_s=recorder.window_s)
    want = expected_concurrency(fc.expected_peak, window_s=recorder.window_s, hold_s=hold_ewma_s)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = (
    "MAX_COUNT",
    "Forecast",
    "Period",
    "Trend",
    "autocorrelation",
    "clean",
    "confidence",
    "demand_windows",
    "detect_period",
    "expected_concurrency",
    "forecast",
    "trend",
)

FloatArray = npt.NDArray[np.float64]

#: Values above this are capped: far beyond any real count per window, and small enough that
#: squares and sums of a million of them stay finite.
MAX_COUNT = 1e12

# A window whose predicted demand reaches half an acquisition counts as "demand expected".
_USE_THRESHOLD = 0.5
# Peak = expected + this many residual standard deviations (about a 97.5% one-sided bound).
_PEAK_SIGMAS = 2.0
# Residual energy below this fraction of the signal's energy is rounding noise, not structure:
# without it the ACF of a detrended straight line would "find" periods in float round-off.
_STRUCTURE_EPS = 1e-12


class Trend(NamedTuple):
    """A least-squares line ``y = slope * i + intercept`` over window indices ``i = 0..n-1``."""

    slope: float
    intercept: float


class Period(NamedTuple):
    """A detected period in windows (``None`` if none) and its autocorrelation (0 if none)."""

    period: int | None
    strength: float


@dataclass(frozen=True, slots=True)
class Forecast:
    """What the next window of a demand series should look like.

    ``trend_slope`` / ``trend_intercept``: the least-squares line over window indices.
    ``period``: the seasonal period in windows, or ``None``; ``seasonal_strength`` is the
    autocorrelation at that lag (0 without a period). ``confidence`` is in ``[0, 1]``.
    ``next_use_s``: seconds from the end of the series until demand is next expected (0 when
    the next window already has some), ``None`` if the model expects none.
    ``expected_next``: expected acquisitions in the next window; ``expected_peak``: an upper
    estimate of it (expected plus two residual standard deviations). Both are ``>= 0``.
    """

    trend_slope: float
    trend_intercept: float
    period: int | None
    seasonal_strength: float
    confidence: float
    next_use_s: float | None
    expected_next: float
    expected_peak: float


_EMPTY = Forecast(0.0, 0.0, None, 0.0, 0.0, None, 0.0, 0.0)


def clean(series: npt.ArrayLike) -> FloatArray:
    """Return ``series`` as a 1-D float64 copy with non-finite and negative values set to 0."""
    a = np.array(series, dtype=np.float64).reshape(-1)
    a[~np.isfinite(a)] = 0.0
    np.clip(a, 0.0, MAX_COUNT, out=a)
    return a


def demand_windows(
    times: npt.ArrayLike, *, window_s: float, duration_s: float | None = None, max_windows: int = 1_000_000
) -> FloatArray:
    """Count acquisition times (seconds from the run start) per window of ``window_s``.

    Window ``i`` covers ``[i * window_s, (i + 1) * window_s)``. The series ends with the window
    of the last time, or covers ``duration_s`` if that is longer (trailing idle windows are
    demand too: zero). Non-finite and negative times are dropped. Raises ``ValueError`` for a
    bad ``window_s`` or if the series would exceed ``max_windows``.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive finite number, got {window_s!r}")
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    t = t[np.isfinite(t) & (t >= 0)]
    n = int(t.max() // window_s) + 1 if t.size else 0
    if duration_s is not None and math.isfinite(duration_s) and duration_s > 0:
        n = max(n, math.ceil(duration_s / window_s))
    if n > max_windows:
        raise ValueError(f"{n} windows of {window_s} s exceed max_windows={max_windows}")
    idx = (t // window_s).astype(np.int64)
    return np.bincount(idx, minlength=n).astype(np.float64)


def trend(series: npt.ArrayLike) -> Trend:
    """Least-squares line through the series; flat through the only point, or 0 if empty."""
    y = clean(series)
    n = y.size
    if n == 0:
        return Trend(0.0, 0.0)
    if n == 1:
        return Trend(0.0, float(y[0]))
    # Ordinary least squares in closed form on centred data: exact (slope 0.0, not 1e-16) for
    # a constant series, and as stable as lstsq for a single regressor.
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    y_mean = float(y.mean())
    slope = float(np.dot(x, y - y_mean) / np.dot(x, x))
    return Trend(slope, y_mean - slope * (n - 1) / 2)


def _line(t: Trend, n: int) -> FloatArray:
    return t.slope * np.arange(n, dtype=np.float64) + t.intercept


def autocorrelation(series: npt.ArrayLike) -> FloatArray:
    """Autocorrelation of the detrended series at lags ``0..n-1`` (biased estimator, FFT).

    The biased estimator (divide by ``n`` at every lag) shrinks long lags, which is what makes
    the fundamental period win over its multiples. All zeros when the series has no variation
    beyond its trend (constant, a straight line, empty).
    """
    y = clean(series)
    n = y.size
    if n < 2:
        return np.zeros(n, dtype=np.float64)
    z = y - _line(trend(y), n)
    energy = float(np.dot(z, z))
    if energy <= _STRUCTURE_EPS * max(float(np.dot(y, y)), 1.0):
        return np.zeros(n, dtype=np.float64)
    nfft = 1 << (2 * n - 1).bit_length()  # zero padding: a linear, not circular, correlation
    spectrum = np.fft.rfft(z, nfft)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), nfft)[:n]
    return np.asarray(acf / acf[0], dtype=np.float64)


def detect_period(
    series: npt.ArrayLike, *, min_period: int = 2, max_period: int | None = None, min_strength: float = 0.3
) -> Period:
    """Find the seasonal period (in windows) by autocorrelation.

    Candidates are the local maxima of the autocorrelation at lags ``min_period`` to
    ``max_period`` (at most ``n // 2``, so at least two cycles are seen). The strongest wins,
    unless a shorter candidate is nearly as strong (90 %): then the shorter one, because a
    period's multiples are peaks too. ``Period(None, 0.0)`` when no candidate reaches
    ``min_strength``.
    """
    acf = autocorrelation(series)
    n = acf.size
    hi = n // 2 if max_period is None else min(max_period, n // 2)
    lo = max(min_period, 1)
    if hi < lo or n < 3:
        return Period(None, 0.0)
    lags = np.arange(lo, hi + 1)
    here = acf[lags]
    is_peak = (here >= acf[lags - 1]) & (here >= acf[lags + 1]) & (here >= min_strength)
    if not is_peak.any():
        return Period(None, 0.0)
    peaks = lags[is_peak]
    best = float(acf[peaks].max())
    chosen = int(peaks[acf[peaks] >= 0.9 * best][0])
    return Period(chosen, float(acf[chosen]))


def confidence(series: npt.ArrayLike, fitted: npt.ArrayLike | None = None) -> float:
    """How much to trust a model of the series, in ``[0, 1]``.

    ``cv`` is the root-mean-square of the residuals (``series - fitted``; the mean stands in
    when ``fitted`` is omitted) divided by the series mean, and the confidence is
    ``1 / (1 + cv)`` shrunk by ``1 - 1/n`` so that short series earn little trust: 0 for
    fewer than two points, 1 only in the limit of a long, perfectly explained series.
    All zeros perfectly explained is a confident "no demand".
    """
    y = clean(series)
    n = y.size
    if n < 2:
        return 0.0
    model = np.full(n, y.mean()) if fitted is None else np.asarray(fitted, dtype=np.float64).reshape(-1)
    if model.shape != y.shape:
        raise ValueError(f"fitted has {model.size} points, the series {n}")
    resid = y - np.clip(np.nan_to_num(model, nan=0.0), -MAX_COUNT, MAX_COUNT)
    rms = math.sqrt(float(np.mean(resid * resid)))
    mean = float(y.mean())
    if rms == 0.0:
        cv = 0.0
    elif mean == 0.0:
        return 0.0  # residuals around a mean of nothing: no scale to judge them by
    else:
        cv = rms / mean
    return (1.0 / (1.0 + cv)) * (1.0 - 1.0 / n)


def expected_concurrency(demand: float, *, window_s: float, hold_s: float) -> float:
    """Instances busy on average when ``demand`` acquisitions per window each hold ``hold_s``.

    Little's law: concurrency = arrival rate x time in system.
    """
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(f"window_s must be a positive finite number, got {window_s!r}")
    value = max(demand, 0.0) / window_s * max(hold_s, 0.0)
    return value if math.isfinite(value) else 0.0


def forecast(series: npt.ArrayLike, *, window_s: float) -> Forecast:
    """Forecast the window after the end of a demand series.

    The model is the least-squares trend plus, when a period is detected, the mean detrended
    demand at each phase of the period. Prediction at window ``n + k`` is that model, floored
    at 0. ``next_use_s`` is the first window (searched over one period, else solved on the
    trend line) predicted to reach half an acquisition, in seconds from the series' end.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive finite number, got {window_s!r}")
    y = clean(series)
    n = y.size
    if n == 0:
        return _EMPTY
    line = trend(y)
    period, strength = detect_period(y)
    fitted = _line(line, n)
    seasonal = np.zeros(1, dtype=np.float64)
    if period is not None:
        resid = y - fitted
        phase = np.arange(n) % period
        sums = np.bincount(phase, weights=resid, minlength=period)
        seasonal = sums / np.bincount(phase, minlength=period)  # every phase occurs: n >= 2 * period
        seasonal -= seasonal.mean()  # the trend already carries the level
        fitted = fitted + seasonal[phase]
    rms = math.sqrt(float(np.mean((y - fitted) ** 2)))
    p = period or 1

    def predict(k: int) -> float:
        return max(line.slope * (n + k) + line.intercept + float(seasonal[(n + k) % p]), 0.0)

    expected = predict(0)
    next_use: float | None = None
    if expected >= _USE_THRESHOLD:
        next_use = 0.0
    else:
        for k in range(1, p):
            if predict(k) >= _USE_THRESHOLD:
                next_use = k * window_s
                break
        else:
            if line.slope > 0:
                # Solve slope * (n + k) + intercept + best seasonal phase = threshold for k.
                k_star = (_USE_THRESHOLD - line.intercept - float(seasonal.max())) / line.slope - n
                seconds = max(float(math.ceil(k_star)), 1.0) * window_s if math.isfinite(k_star) else math.inf
                next_use = seconds if math.isfinite(seconds) else None
    return Forecast(
        trend_slope=line.slope,
        trend_intercept=line.intercept,
        period=period,
        seasonal_strength=strength,
        confidence=confidence(y, fitted),
        next_use_s=next_use,
        expected_next=expected,
        expected_peak=expected + _PEAK_SIGMAS * rms,
    )
