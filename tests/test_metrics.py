"""Metrics: the wait percentiles weigh in the hits that never queued (counted, not stored);
the helpers the report, the pytest summary and the stress plot read them through."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mockpool.metrics import (
    LoopBlocks,
    Ring,
    ServiceMetrics,
    format_error,
    merged_wait_percentiles,
    reset_problem,
    wait_percentiles,
)


def _metrics(at_once: int, waits: list[float]) -> ServiceMetrics:
    m = ServiceMetrics()
    m.acquisitions = at_once + len(waits)
    m.queued = len(waits)
    m.hits = at_once
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
    assert p99 == 3.0  # nearest rank: a wait some acquisition had, not 2.98


def test_zeros_take_their_share_of_the_distribution() -> None:
    # 90 served at once, 10 waited 1..10 s: the median is 0, the 99th percentile is in the waits.
    m = _metrics(90, [float(i) for i in range(1, 11)])
    p50, p95, p99 = m.wait_percentiles(50, 95, 99)
    assert p50 == 0.0
    assert 1.0 <= p95 <= 10.0
    assert p95 < p99 <= 10.0


def test_workers_merge_to_the_figures_of_one_process() -> None:
    """Two xdist workers' waits, merged through ``wait_percentiles``, give what one process
    with all of them reports (the pytest summary merges so)."""
    a = _metrics(120, [0.5, 1.0, 2.0])
    b = _metrics(40, [0.25, 4.0])
    merged = wait_percentiles(
        a.waits.values() + b.waits.values(),
        a.waits.count + b.waits.count,
        a.zero_waits() + b.zero_waits(),
        50,
        97,
        99,
    )
    assert merged == _metrics(160, [0.5, 1.0, 2.0, 0.25, 4.0]).wait_percentiles(50, 97, 99)
    assert merged[0] == 0.0 < merged[1]


def test_a_worker_whose_ring_dropped_waits_weighs_all_it_recorded() -> None:
    """Worker a had 6,000 waits of 1 s (its ring kept 2,048), worker b 100 of 10 s: 10 s is
    1.6 % of the waits, so p97 is 1 s. Merged as one list of kept samples, b's 100 stood
    for 4.7 % of them and p97 read 10 s."""
    a = _metrics(0, [1.0] * 6000)
    b = _metrics(0, [10.0] * 100)
    parts = [(m.waits.values(), m.waits.count) for m in (a, b)]
    merged = merged_wait_percentiles(parts, 0, 50, 97, 99)
    assert merged == tuple(np.percentile([1.0] * 6000 + [10.0] * 100, [50, 97, 99], method="inverted_cdf"))
    assert merged[1] == 1.0 < merged[2]


def test_merging_one_part_is_wait_percentiles() -> None:
    m = _metrics(300, [0.5 + i / 1000 for i in range(5000)])  # the ring dropped 2,952
    qs = (10, 50, 90, 99, 100)
    alone = m.wait_percentiles(*qs)
    assert merged_wait_percentiles([(m.waits.values(), m.waits.count)], m.zero_waits(), *qs) == alone
    assert alone[-1] == 0.5 + 4999 / 1000


def test_a_small_sample_reads_waits_that_happened() -> None:
    """A hit (0 s), a timeout (50.7 ms) and a miss (300.7 ms): the median is the timeout's
    wait; it read 113.2 ms, a wait nobody had. The p99 is the miss's, not 295.7 ms
    interpolated towards it; and of a hit and a miss, the median is the hit's."""
    m = _metrics(1, [0.0507, 0.3007])
    assert m.wait_percentiles(50, 99) == (0.0507, 0.3007)
    assert _metrics(1, [0.0164]).wait_percentiles(50, 99) == (0.0, 0.0164)


@given(
    st.integers(0, 40),
    st.lists(st.floats(0, 1e3, allow_subnormal=False), min_size=1, max_size=40),
    st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
def test_wait_percentiles_are_numpys_of_the_zeros_and_the_samples(
    zeros: int, samples: list[float], qs: list[float]
) -> None:
    every = np.array([0.0] * zeros + samples)
    expected = np.percentile(every, qs, method="inverted_cdf")
    got = wait_percentiles(samples, len(samples), zeros, *qs)
    assert got == pytest.approx(tuple(expected), rel=1e-9, abs=1e-12)


def test_wait_percentiles_do_not_materialise_the_zeros() -> None:
    # A trillion hits would not fit in memory as a list; the rank is found without one.
    p50, top = wait_percentiles([1.0, 2.0], 2, 10**12, 50, 100)
    assert (p50, top) == (0.0, 2.0)


def test_a_ring_that_dropped_waits_stands_for_all_recorded() -> None:
    """1,000 waits recorded, the ring kept 10 (all 1 s) beside 3,000 zeros: the zeros are
    still three quarters of the list, so p75 is in the zeros and p76 in the waits."""
    p75, p76 = wait_percentiles([1.0] * 10, 1000, 3000, 74.9, 76)
    assert (p75, p76) == (0.0, 1.0)


def test_ring_since_returns_what_was_appended_after_a_count() -> None:
    ring = Ring(4)
    for value in (1.0, 2.0, 3.0):
        ring.append(value)
    assert ring.since(1) == [2.0, 3.0]
    assert ring.since(3) == []
    for value in (4.0, 5.0, 6.0):
        ring.append(value)  # wraps: keeps 3..6
    assert ring.since(3) == [4.0, 5.0, 6.0]
    assert ring.since(0) == [3.0, 4.0, 5.0, 6.0]  # no more than it keeps


def test_ring_drop_last_takes_back_the_last_sample_full_or_not() -> None:
    ring = Ring(4)
    for value in (1.0, 2.0, 3.0):
        ring.append(value)
    ring.drop_last()
    assert (ring.values(), ring.count) == ([1.0, 2.0], 2)
    for value in (3.0, 4.0, 5.0, 6.0):
        ring.append(value)  # wraps: keeps 3..6, 1 and 2 are gone
    ring.drop_last()
    # 6 is taken back; 2, the sample it had replaced, is gone for good: three kept.
    assert (ring.values(), ring.count) == ([3.0, 4.0, 5.0], 5)
    ring.append(7.0)
    assert (ring.values(), ring.count) == ([3.0, 4.0, 5.0, 7.0], 6)


def test_unrecord_wait_puts_the_wait_figures_back() -> None:
    m = ServiceMetrics()
    m.record_wait(1.0)
    ewma = m.wait_ewma
    m.record_wait(5.0)
    m.unrecord_wait(5.0)
    assert m.waits.values() == [1.0]
    assert m.wait_ewma == pytest.approx(ewma)


def test_format_error_is_one_short_line() -> None:
    assert format_error(None) is None
    assert format_error(TimeoutError()) == "TimeoutError"
    assert format_error(ValueError("bad\n  value")) == "ValueError: bad value"
    long = format_error(RuntimeError("x" * 500), limit=40)
    assert long is not None and len(long) == 40 and long.endswith("...")


def test_reset_problem_names_the_service_the_count_the_error_and_the_fix() -> None:
    assert reset_problem("redis", resets=3, failures=3, last_error="E: x") is None
    assert reset_problem("redis", resets=0, failures=12, last_error="AttributeError: no kill") == (
        "service 'redis': 12 of 12 resets failed, so those leases rebuilt their instance "
        "(last error: AttributeError: no kill); the reset hook raises: fix it, or remove reset="
    )
    leaky = reset_problem("db", resets=1, failures=2, last_error=None, isolation=True)
    assert leaky is not None
    assert "2 of 3 resets failed" in leaky
    assert "(last error: not recorded)" in leaky
    assert leaky.endswith("resets leave state behind (isolation check failed): make the reset hook clear it")


# -- the leases' own work: holds less the time sync factories held the loop ----------------


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1) | st.just(0.0)), min_size=1, max_size=60))
def test_work_ewma_is_the_mean_of_holds_less_what_blocked_them(samples: list[tuple[float, float]]) -> None:
    """Kept lazily (the release path only pays when a factory blocked the lease), the mean
    equals the EWMA of hold - blocked taken at every lease."""
    metrics = ServiceMetrics()
    assert metrics.work_ewma is None
    eager = 0.0
    for index, (hold, blocked) in enumerate(samples):
        blocked = min(blocked, hold)
        if blocked:
            metrics.record_blocked_hold(hold, blocked)
        else:
            metrics.record_hold(hold)
        work = hold - blocked
        eager = work if index == 0 else eager + 0.1 * (work - eager)
    lazy = _work(metrics)
    assert lazy == pytest.approx(max(0.0, eager), abs=1e-9)
    assert metrics.hold_ewma >= lazy - 1e-9


def _work(metrics: ServiceMetrics) -> float:
    work = metrics.work_ewma
    assert work is not None
    return work


def test_loop_blocks_sum_the_spans_within_a_lease() -> None:
    blocks = LoopBlocks()
    assert blocks.within(0.0, 10.0) == 0.0
    blocks.add(1.0, 2.0)
    blocks.add(3.0, 3.0)  # empty: not kept
    blocks.add(4.0, 6.0)
    assert blocks.last_end == 6.0
    assert blocks.within(0.0, 10.0) == 3.0
    assert blocks.within(1.5, 5.0) == pytest.approx(0.5 + 1.0)
    assert blocks.within(6.0, 9.0) == 0.0
