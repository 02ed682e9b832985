"""Metrics: the wait percentiles weigh in the hits that never queued (counted, not stored)."""

from __future__ import annotations

import pytest

from mockpool.metrics import ServiceMetrics


def _metrics(at_once: int, waits: list[float]) -> ServiceMetrics:
    m = ServiceMetrics()
    m.acquisitions = at_once + len(waits)
    m.queued = len(waits)
    for w in waits:
        m.record_wait(w)
    return m


def test_all_served_at_once_waited_nothing() -> None:
    assert _metrics(100, []).wait_percentiles(50, 99) == (0.0, 0.0)


def test_no_acquisitions_gives_zeros() -> None:
    assert ServiceMetrics().wait_percentiles(50, 99) == (0.0, 0.0)


def test_only_queued_waits_use_the_ring() -> None:
    p50, p99 = _metrics(0, [1.0, 2.0, 3.0]).wait_percentiles(50, 99)
    assert p50 == pytest.approx(2.0)
    assert p99 == pytest.approx(2.98)


def test_zeros_take_their_share_of_the_distribution() -> None:
    # 90 served at once, 10 waited 1..10 s: the median is 0, the 99th percentile is in the waits.
    m = _metrics(90, [float(i) for i in range(1, 11)])
    p50, p95, p99 = m.wait_percentiles(50, 95, 99)
    assert p50 == 0.0
    assert 1.0 <= p95 <= 10.0
    assert p95 < p99 <= 10.0
