"""Usage history: recording a run, merging runs with decay, bounds, and a safe JSON file."""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import pickle
import tracemalloc
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mockpool.history as history_module
import mockpool.history.store as history_store
from mockpool import MockPool, ServiceSpec
from mockpool.history import (
    FORMAT,
    VERSION,
    History,
    HistoryFormatError,
    Limits,
    MockPoolHistoryWarning,
    RunRecord,
    ServiceUsage,
    UsageRecorder,
)


def usage(
    demand: tuple[float, ...] = (1.0,), *, peak: int = 1, hold: float = 0.1, p95: float = 0.2
) -> ServiceUsage:
    return ServiceUsage(
        acquisitions=int(sum(demand)), peak_concurrency=peak, hold_mean_s=hold, hold_p95_s=p95, demand=demand
    )


def run(
    window_s: float = 1.0, tests: dict[str, tuple[str, ...]] | None = None, **services: ServiceUsage
) -> RunRecord:
    longest = max((len(u.demand) for u in services.values()), default=0)
    return RunRecord(window_s, longest * window_s, services, tests or {})


def merged(*runs: RunRecord, decay: float = 0.5, limits: Limits | None = None) -> History:
    h = History()
    for r in runs:
        h = h.merge(r, decay=decay, limits=limits or Limits())
    return h


def sample_history() -> History:
    r = UsageRecorder(window_s=0.5)
    for i in range(20):
        r.record_acquire("redis", i * 0.3, i % 4 + 1)
        r.record_release("redis", 0.01 * i)
    r.record_acquire("jwt", 1.2, 1)
    r.record_test("tests/test_a.py::test_x", ["redis", "jwt"])
    return merged(r.finish(duration_s=7.0), r.finish(duration_s=7.0))


# --------------------------------------------------------------------------- recorder


def test_recorder_counts_per_window_and_peak() -> None:
    r = UsageRecorder(window_s=1.0)
    for t, in_use in [(0.0, 1), (0.5, 2), (0.99, 3), (1.0, 1), (3.5, 2)]:
        r.record_acquire("redis", t, in_use)
    got = r.finish().services["redis"]
    assert got.demand == (3.0, 1.0, 0.0, 1.0)
    assert got.acquisitions == 5
    assert got.peak_concurrency == 3


def test_recorder_hold_summary() -> None:
    r = UsageRecorder()
    for hold in range(1, 101):
        r.record_release("db", float(hold))
    got = r.finish().services["db"]
    assert got.hold_mean_s == pytest.approx(50.5)
    assert got.hold_p95_s == pytest.approx(np.percentile(np.arange(1, 101), 95))


def test_recorder_hold_p95_is_of_recent_releases() -> None:
    r = UsageRecorder(hold_samples=10)
    for _ in range(100):
        r.record_release("db", 100.0)
    for _ in range(10):
        r.record_release("db", 1.0)
    got = r.finish().services["db"]
    assert got.hold_p95_s == 1.0
    assert got.hold_mean_s == pytest.approx((100 * 100 + 10) / 110)


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf])
def test_recorder_ignores_invalid_hold_times(bad: float) -> None:
    r = UsageRecorder()
    r.record_release("db", 2.0)
    r.record_release("db", bad)
    assert r.finish().services["db"].hold_mean_s == 2.0


@pytest.mark.parametrize("bad", [math.nan, -5.0, math.inf, 1e300])
def test_recorder_counts_invalid_times_in_the_first_window(bad: float) -> None:
    r = UsageRecorder()
    r.record_acquire("redis", bad, 1)
    assert r.finish().services["redis"].demand == (1.0,)


def test_recorder_doubles_its_window_when_the_run_outgrows_max_windows() -> None:
    r = UsageRecorder(window_s=1.0, max_windows=4)
    for t in range(8):
        r.record_acquire("redis", t + 0.5, 1)
    r.record_acquire("jwt", 0.5, 1)
    assert r.window_s == 2.0
    got = r.finish()
    assert got.window_s == 2.0
    assert got.services["redis"].demand == (2.0, 2.0, 2.0, 2.0)
    assert got.services["jwt"].demand == (1.0, 0.0, 0.0, 0.0)  # one shared grid, padded


def test_recorder_stays_bounded_on_a_long_run() -> None:
    r = UsageRecorder(window_s=1.0, max_windows=100)
    for t in range(0, 100_000, 7):
        r.record_acquire("redis", float(t), 1)
    got = r.finish()
    assert len(got.services["redis"].demand) <= 100
    assert (
        sum(got.services["redis"].demand) == got.services["redis"].acquisitions == len(range(0, 100_000, 7))
    )


def test_recorder_tests_are_sorted_unique_and_capped() -> None:
    r = UsageRecorder(max_tests=2)
    r.record_test("a", ["redis", "jwt", "redis"])
    r.record_test("b", [])
    r.record_test("c", ["db"])  # over the cap: dropped
    r.record_test("a", ["db"])  # known test: the last call wins
    assert dict(r.finish().tests) == {"a": ("db",), "b": ()}


def test_recorder_finish_pads_to_duration() -> None:
    r = UsageRecorder(window_s=2.0)
    r.record_acquire("redis", 0.1, 1)
    got = r.finish(duration_s=7.0)
    assert got.services["redis"].demand == (1.0, 0.0, 0.0, 0.0)
    assert got.duration_s == 7.0


def test_recorder_live_demand_only_shows_complete_windows() -> None:
    r = UsageRecorder(window_s=1.0)
    for t in (0.1, 0.2, 1.5, 2.1):
        r.record_acquire("redis", t, 1)
    np.testing.assert_array_equal(r.demand("redis"), [2.0, 1.0, 1.0])
    np.testing.assert_array_equal(r.demand("redis", t_rel=2.5), [2.0, 1.0])  # window 2 still open
    np.testing.assert_array_equal(r.demand("redis", t_rel=6.0), [2.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(r.demand("unknown", t_rel=2.0), [0.0, 0.0])
    assert r.demand("redis", t_rel=math.nan).size == 0


def test_recorder_steady_state_allocates_nothing() -> None:
    r = UsageRecorder(window_s=1.0)
    times = [0.001 * i for i in range(10_000)]  # all in the first window
    r.record_acquire("redis", 0.0, 1)
    r.record_release("redis", 0.1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for t in times:
            r.record_acquire("redis", t, 2)
            r.record_release("redis", t)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 1024


def test_recorder_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="window_s"):
        UsageRecorder(window_s=0.0)
    with pytest.raises(ValueError, match="max_windows"):
        UsageRecorder(max_windows=1)


# --------------------------------------------------------------------------- run records


def test_combine_sums_parallel_workers() -> None:
    a = run(redis=usage((2.0, 1.0), peak=3, hold=0.1, p95=0.3), tests={"t1": ("redis",)})
    b = run(
        redis=usage((1.0, 0.0, 4.0), peak=2, hold=0.4, p95=0.5), jwt=usage((1.0,)), tests={"t2": ("jwt",)}
    )
    got = RunRecord.combine([a, b])
    redis = got.services["redis"]
    assert redis.demand == (3.0, 1.0, 4.0)
    assert redis.acquisitions == 8
    assert redis.peak_concurrency == 5
    assert redis.hold_mean_s == pytest.approx((0.1 * 3 + 0.4 * 5) / 8)
    assert redis.hold_p95_s == 0.5
    assert got.services["jwt"].demand == (1.0,)
    assert dict(got.tests) == {"t1": ("redis",), "t2": ("jwt",)}
    assert got.duration_s == 3.0


def test_combine_unites_what_the_workers_leased_outside_tests() -> None:
    """Each xdist worker runs its own session fixtures and threads: the services any of them
    leased outside tests are all kept (a later worker's entry replaced an earlier one's)."""
    from mockpool.history.format import OUTSIDE_TESTS

    a = run(redis=usage(), tests={OUTSIDE_TESTS: ("redis",), "t1": ("redis",)})
    b = run(jwt=usage(), tests={OUTSIDE_TESTS: ("jwt",)})
    assert dict(RunRecord.combine([a, b]).tests) == {OUTSIDE_TESTS: ("jwt", "redis"), "t1": ("redis",)}


def test_combine_rebins_to_the_coarsest_window() -> None:
    fine = run(1.0, redis=usage((1.0, 1.0, 1.0, 1.0)))
    coarse = run(2.0, redis=usage((3.0,)))
    got = RunRecord.combine([fine, coarse])
    assert got.window_s == 2.0
    assert got.services["redis"].demand == (5.0, 2.0)


def test_combine_needs_a_run() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RunRecord.combine([])


def test_run_record_round_trips_through_json() -> None:
    r = UsageRecorder(window_s=0.25)
    r.record_acquire("redis", 0.3, 2)
    r.record_release("redis", 0.05)
    r.record_test("t", ["redis"])
    record = r.finish(duration_s=1.0)
    assert RunRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d.update(format="mockpool-history"), id="wrong-format"),
        pytest.param(lambda d: d.update(version=2), id="wrong-version"),
        pytest.param(lambda d: d["services"]["redis"].update(peak_concurrency=1.5), id="float-peak"),
        pytest.param(lambda d: d["tests"].update(t=[1]), id="non-string-service"),
        pytest.param(lambda d: d.update(window_s=0), id="zero-window"),
    ],
)
def test_run_record_from_dict_rejects(mutate: Any) -> None:
    data = run(redis=usage(), tests={"t": ("redis",)}).to_dict()
    mutate(data)
    with pytest.raises(HistoryFormatError):
        RunRecord.from_dict(data)


def test_records_are_read_only() -> None:
    record = run(redis=usage())
    with pytest.raises(TypeError):
        record.services["jwt"] = usage()  # type: ignore[index]
    with pytest.raises(AttributeError):
        record.window_s = 2.0  # type: ignore[misc]


# --------------------------------------------------------------------------- merging


def test_first_run_is_taken_whole() -> None:
    h = merged(run(redis=usage((2.0, 4.0), peak=3, hold=0.1, p95=0.2), tests={"t": ("redis",)}))
    assert h.runs == 1
    assert h.peak("redis") == 3.0
    np.testing.assert_array_equal(h.demand_series("redis"), [2.0, 4.0])
    assert h.services["redis"].hold_mean_s == 0.1
    assert h.services_for_test("t") == ("redis",)


def test_unknown_queries_are_empty() -> None:
    h = History()
    assert h.peak("redis") == 0.0
    assert h.demand_series("redis").size == 0
    assert h.services_for_test("t") == ()
    assert h.size("redis") == 0.0
    assert h.runs == 0


def test_decayed_mean_by_hand() -> None:
    h = merged(run(redis=usage((4.0,))), run(redis=usage((1.0,))), decay=0.5)
    # weights: old 0.5, new 1 -> 4 * 1/3 + 1 * 2/3
    assert h.demand_series("redis")[0] == pytest.approx(2.0)
    h = h.merge(run(redis=usage((1.0,))), decay=0.5)
    # weights 0.25, 0.5, 1
    assert h.demand_series("redis")[0] == pytest.approx((4 * 0.25 + 1 * 0.5 + 1) / 1.75)
    assert h.services["redis"].weight == pytest.approx(1.75)


def test_decayed_peak_is_a_decayed_max() -> None:
    h = merged(run(redis=usage(peak=10)), run(redis=usage(peak=2)), decay=0.5)
    assert h.peak("redis") == 5.0  # max(2, 10 * 0.5)
    h = h.merge(run(redis=usage(peak=8)), decay=0.5)
    assert h.peak("redis") == 8.0


@pytest.mark.parametrize("decay", [0.1, 0.5, 0.9])
def test_recent_runs_weigh_more(decay: float) -> None:
    low, high = run(redis=usage((1.0,), peak=1)), run(redis=usage((9.0,), peak=9))
    rising = merged(low, high, decay=decay).demand_series("redis")[0]
    falling = merged(high, low, decay=decay).demand_series("redis")[0]
    assert rising > 5.0 > falling
    assert (
        merged(low, low, high, decay=decay).demand_series("redis")[0]
        > merged(high, low, low, decay=decay).demand_series("redis")[0]
    )


@pytest.mark.parametrize(
    ("decay", "expected"),
    [
        pytest.param(0.0, 9.0, id="zero-forgets-the-past"),
        pytest.param(1.0, 5.0, id="one-averages-equally"),
    ],
)
def test_decay_extremes(decay: float, expected: float) -> None:
    h = merged(run(redis=usage((1.0,))), run(redis=usage((9.0,))), decay=decay)
    assert h.demand_series("redis")[0] == pytest.approx(expected)


@pytest.mark.parametrize("decay", [-0.1, 1.5, math.nan])
def test_merge_rejects_bad_decay(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        History().merge(run(redis=usage()), decay=decay)


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 100.0), st.integers(0, 100)), min_size=1, max_size=12),
    st.floats(0.0, 1.0),
)
def test_merge_is_a_decay_weighted_mean(samples: list[tuple[float, int]], decay: float) -> None:
    h = merged(*(run(redis=usage((d,), peak=p)) for d, p in samples), decay=decay)
    ages = np.arange(len(samples))[::-1]
    weights = decay**ages
    demand = np.array([d for d, _ in samples])
    peaks = np.array([p for _, p in samples], dtype=float)
    assert h.demand_series("redis")[0] == pytest.approx(weights @ demand / weights.sum(), rel=1e-5, abs=1e-5)
    assert h.peak("redis") == pytest.approx(float((peaks * weights).max()))


def test_absent_service_keeps_its_mean_but_decays_then_goes() -> None:
    limits = Limits(max_idle_runs=3)
    h = merged(run(redis=usage((4.0,), peak=8), jwt=usage()), limits=limits)
    for expected_peak in (4.0, 2.0, 1.0):
        h = h.merge(run(jwt=usage()), limits=limits)
        assert h.peak("redis") == expected_peak
        assert h.demand_series("redis")[0] == 4.0
    assert h.services["redis"].weight == pytest.approx(0.125)
    h = h.merge(run(jwt=usage()), limits=limits)
    assert "redis" not in h.services


def test_tests_take_the_latest_services_and_expire() -> None:
    limits = Limits(max_idle_runs=2)
    h = merged(run(tests={"a": ("redis",), "b": ("db",)}), run(tests={"a": ("jwt",)}), limits=limits)
    assert h.services_for_test("a") == ("jwt",)
    assert h.services_for_test("b") == ("db",)
    h = h.merge(run(tests={"a": ("jwt",)}), limits=limits).merge(run(tests={"a": ("jwt",)}), limits=limits)
    assert h.services_for_test("b") == ()


def test_merge_adopts_the_coarser_window_and_keeps_totals() -> None:
    h = merged(run(1.0, redis=usage((1.0, 2.0, 3.0, 4.0))), run(2.0, redis=usage((3.0, 7.0))), decay=0.0)
    assert h.window_s == 2.0
    np.testing.assert_allclose(h.demand_series("redis"), [3.0, 7.0])
    h = merged(run(1.0, redis=usage((1.0, 2.0, 3.0, 4.0))), run(2.0, jwt=usage((1.0,))), decay=0.0)
    np.testing.assert_allclose(h.demand_series("redis"), [3.0, 7.0])  # re-binned too


def test_merge_coarsens_a_run_longer_than_max_windows() -> None:
    limits = Limits(max_windows=10)
    h = merged(run(1.0, redis=usage(tuple(float(i % 3) for i in range(35)))), limits=limits)
    assert h.window_s == 4.0
    series = h.demand_series("redis")
    assert series.size <= 10
    assert series.sum() == pytest.approx(sum(i % 3 for i in range(35)))


def test_size_stays_bounded_after_many_merges() -> None:
    limits = Limits(max_windows=50, max_services=5, max_tests=10, max_services_per_test=3, max_idle_runs=1000)
    h = History()
    rng = np.random.default_rng(0)
    for i in range(200):
        services = {f"svc{i}": usage(tuple(rng.integers(0, 5, 10 + i).astype(float))), "redis": usage()}
        tests = {f"test{i}_{j}": tuple(f"s{k}" for k in range(10)) for j in range(5)}
        h = h.merge(RunRecord(1.0, 10.0 + i, services, tests), limits=limits)
    assert h.runs == 200
    assert len(h.services) == 5
    assert "redis" in h.services and "svc199" in h.services  # the most recently used are kept
    assert len(h.tests) == 10
    assert all(len(t.services) <= 3 for t in h.tests.values())
    assert all(len(s.demand) <= 50 for s in h.services.values())


def test_file_size_is_stable_under_repeated_runs(tmp_path: Path) -> None:
    record = sample_history()
    r = run(
        redis=usage(tuple(float(i % 7) for i in range(300))), tests={f"t{i}": ("redis",) for i in range(100)}
    )
    path = tmp_path / "h.json"
    sizes = []
    for _ in range(30):
        record = record.merge(r)
        record.save(path)
        sizes.append(path.stat().st_size)
    assert max(sizes[5:]) <= sizes[5] * 1.1


# --------------------------------------------------------------------------- persistence


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    h = sample_history()
    path = tmp_path / "deep" / "dir" / "history.json"
    h.save(path)
    assert History.load(path) == h
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == (FORMAT, VERSION)
    assert History.from_dict(h.to_dict()) == h
    assert [p.name for p in path.parent.iterdir()] == ["history.json"]  # no temp file left


def test_save_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    History().save(path)
    sample_history().save(path)
    assert History.load(path) == sample_history()


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failed_save_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    path = tmp_path / "h.json"
    old = sample_history()
    old.save(path)
    before = path.read_bytes()

    def boom(*args: object) -> None:
        raise OSError(f"simulated {fail_at} failure")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="simulated"):
        old.merge(run(redis=usage((50.0,)))).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]


def test_load_missing_file_is_empty_without_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert History.load(tmp_path / "nope.json") == History()


def _valid() -> dict[str, Any]:
    return sample_history().to_dict()


def _set(path: tuple[str, ...], value: object) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return mutate


CORRUPT: list[Any] = [
    pytest.param(b"", "JSONDecodeError", id="empty-file"),
    pytest.param(b"{not json", "JSONDecodeError", id="not-json"),
    pytest.param(json.dumps(_valid()).encode()[:-20], "JSONDecodeError", id="truncated"),
    pytest.param(b"\xff\xfe\x00garbage", "UnicodeDecodeError", id="not-utf8"),
    pytest.param(b"\x80\x04\x95\x00\x00\x00\x00", "UnicodeDecodeError", id="pickle-is-never-loaded"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "RecursionError", id="absurdly-nested"),
    pytest.param(b"[1, 2]", "expected a JSON object", id="a-list"),
    pytest.param(b'{"format": "other", "version": 1}', "format", id="foreign-format"),
    pytest.param(json.dumps({**_valid(), "version": 2}).encode(), "version", id="future-version"),
    pytest.param(json.dumps({**_valid(), "version": True}).encode(), "version", id="bool-version"),
    pytest.param(json.dumps({**_valid(), "version": "1"}).encode(), "version", id="string-version"),
    pytest.param(json.dumps(_valid()).replace('"peak":', '"peak": NaN, "x":').encode(), "NaN", id="nan"),
    pytest.param(
        json.dumps(_valid()).replace('"weight":', '"weight": 1e400, "x":').encode(), "weight", id="inf"
    ),
]


def _mutated(path: tuple[str, ...], value: object) -> bytes:
    data = _valid()
    _set(path, value)(data)
    return json.dumps(data).encode()


CORRUPT += [
    pytest.param(_mutated(("services",), []), "services", id="services-a-list"),
    pytest.param(_mutated(("services", "redis"), 3), "redis", id="service-not-object"),
    pytest.param(_mutated(("services", "redis", "peak"), -1), "peak", id="negative-peak"),
    pytest.param(_mutated(("services", "redis", "peak"), "3"), "peak", id="string-peak"),
    pytest.param(_mutated(("services", "redis", "peak"), True), "peak", id="bool-peak"),
    pytest.param(_mutated(("services", "redis", "peak"), 10**400), "peak", id="huge-int-peak"),
    pytest.param(_mutated(("services", "redis", "last_run"), 1.5), "last_run", id="float-last-run"),
    pytest.param(_mutated(("services", "redis", "last_run"), 99), "after the last", id="future-last-run"),
    pytest.param(_mutated(("services", "redis", "demand"), [1, "x"]), "demand", id="demand-with-string"),
    pytest.param(_mutated(("services", "redis", "demand"), {"0": 1}), "demand", id="demand-an-object"),
    pytest.param(
        _mutated(("tests", "tests/test_a.py::test_x", "services"), "redis"), "services", id="test-str"
    ),
    pytest.param(_mutated(("window_s",), 0), "window_s", id="zero-window"),
    pytest.param(_mutated(("runs",), None), "runs", id="missing-runs"),
]


@pytest.mark.parametrize(("content", "reason"), CORRUPT)
def test_load_ignores_a_bad_file_with_a_warning(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "h.json"
    path.write_bytes(content)
    with pytest.warns(MockPoolHistoryWarning, match=reason) as record:
        got = History.load(path)
    assert got == History()
    assert str(path) in str(record[0].message)


def test_load_of_a_directory_warns(tmp_path: Path) -> None:
    with pytest.warns(MockPoolHistoryWarning, match="IsADirectoryError"):
        assert History.load(tmp_path) == History()


def test_load_of_an_unreadable_file_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.json"
    sample_history().save(path)

    def denied(self: Path, *args: object, **kwargs: object) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)
    with pytest.warns(MockPoolHistoryWarning, match="PermissionError"):
        assert History.load(path) == History()


def test_load_refuses_an_oversized_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.json"
    sample_history().save(path)
    monkeypatch.setattr(history_store, "_MAX_FILE_BYTES", 100)
    with pytest.warns(MockPoolHistoryWarning, match="larger than"):
        assert History.load(path) == History()


def test_from_cache() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert History.from_cache(None) == History()
        assert History.from_cache(sample_history().to_dict()) == sample_history()
    with pytest.warns(MockPoolHistoryWarning, match="pytest cache.*version"):
        assert History.from_cache({"format": FORMAT, "version": 0}) == History()


def test_history_is_read_only() -> None:
    h = sample_history()
    with pytest.raises(TypeError):
        h.services["x"] = h.services["redis"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        h.runs = 5  # type: ignore[misc]


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="max_tests"):
        Limits(max_tests=0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _fuzzed_history() -> st.SearchStrategy[Any]:
    # Valid documents with one subtree replaced by arbitrary JSON.
    base = _valid()
    paths = [
        ("window_s",),
        ("runs",),
        ("services",),
        ("services", "redis"),
        ("services", "redis", "demand"),
        ("services", "redis", "weight"),
        ("tests",),
        ("tests", "tests/test_a.py::test_x"),
        ("tests", "tests/test_a.py::test_x", "services"),
    ]

    def build(path: tuple[str, ...], value: object) -> Any:
        data = json.loads(json.dumps(base))
        _set(path, value)(data)
        return data

    return st.builds(build, st.sampled_from(paths), json_values)


@settings(deadline=None)
@given(st.one_of(json_values, _fuzzed_history()))
def test_from_dict_only_ever_raises_format_errors(data: object) -> None:
    try:
        h = History.from_dict(data)
    except HistoryFormatError:
        return
    # Whatever got through is usable: queries work and it saves as valid JSON.
    for name in h.services:
        assert math.isfinite(h.peak(name))
        assert math.isfinite(h.size(name))
    assert History.from_dict(json.loads(json.dumps(h.to_dict(), allow_nan=False))) == h


@pytest.mark.parametrize(
    "content",
    [
        b'{"format": "mockpool-history", "version": 99, "window_s": 1.0, "runs": 1}',
        b'{"some": "other tool"}',
    ],
    ids=["a future version", "another tool's json"],
)
def test_a_pool_never_overwrites_a_history_file_it_cannot_read(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "history.json"
    path.write_bytes(content)
    beside = tmp_path / "history.mockpool-v1.json"
    with pytest.warns(MockPoolHistoryWarning) as record:
        pool = MockPool(history=path)
    assert str(record[0].message).endswith(
        f"left as it is, and this run's history is kept beside it in {str(beside)!r}"
    )
    pool.register(ServiceSpec(name="svc", factory=dict))

    async def run() -> None:
        async with pool, pool.acquire("svc"):
            pass

    asyncio.run(run())
    assert path.read_bytes() == content  # kept byte for byte
    assert History.load(beside).runs == 1
    # The next run learns from the file beside it, and says so again.
    with pytest.warns(MockPoolHistoryWarning, match="kept beside it"):
        again = MockPool(history=path)
    assert again.history.runs == 1 and again.history_path == beside


def test_a_history_path_under_a_file_warns_once_and_keeps_no_history(tmp_path: Path) -> None:
    """A parent of the path is a file: no file can be there, nor beside it. It warned three
    times, the first saying the history was kept beside it, which it never was."""
    (tmp_path / "afile").touch()
    path = tmp_path / "afile" / "history.json"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pool = MockPool(history=path)
        pool.register(ServiceSpec(name="svc", factory=dict))

        async def run() -> None:
            async with pool, pool.acquire("svc"):
                pass

        asyncio.run(run())
    expected = (
        f"mockpool: cannot use history file {str(path)!r} (NotADirectoryError: [Errno 20] Not a "
        f"directory: {str(path)!r}): a parent of it is a file; this run neither reads nor saves "
        "history. Pass a path in a directory"
    )
    assert [(w.category, str(w.message)) for w in record] == [(MockPoolHistoryWarning, expected)]
    assert pool.history_path is None and pool.history.runs == 0


def test_the_settled_size_is_kept_decayed_and_read_from_files_without_it() -> None:
    first = merged(run(redis=replace(usage((1.0,)), size=6)))
    assert first.size("redis") == 6.0
    second = first.merge(run(redis=replace(usage((1.0,)), size=2)), decay=0.5)
    assert second.size("redis") == 3.0  # max(2, 6 * 0.5)
    data = first.to_dict()
    del data["services"]["redis"]["size"]  # a file written before the field existed
    assert History.from_dict(data).size("redis") == 0.0


# --------------------------------------------------------------------------- the package's surface

#: What ``mockpool.history`` exported when it was one module; the package keeps all of it.
PUBLIC = (
    "FORMAT",
    "RUN_FORMAT",
    "VERSION",
    "History",
    "HistoryFormatError",
    "Limits",
    "MockPoolHistoryWarning",
    "RunRecord",
    "ServiceHistory",
    "ServiceUsage",
    "TestHistory",
    "UsageRecorder",
)


def test_every_name_stays_importable_from_mockpool_history() -> None:
    assert history_module.__all__ == PUBLIC
    for name in (*PUBLIC, "DEFAULT_LIMITS"):
        assert getattr(history_module, name) is not None
    assert Limits() == history_module.DEFAULT_LIMITS


@pytest.mark.parametrize("name", [n for n in PUBLIC if isinstance(getattr(history_module, n), type)])
def test_each_class_is_found_where_its_module_says(name: str) -> None:
    # pytest-xdist carries a worker's warning to the controller as (module, name) and imports it.
    cls = getattr(history_module, name)
    assert getattr(importlib.import_module(cls.__module__), cls.__qualname__) is cls


def test_the_warning_and_the_error_keep_their_public_module() -> None:
    for cls in (MockPoolHistoryWarning, HistoryFormatError):
        assert f"{cls.__module__}.{cls.__qualname__}" == f"mockpool.history.{cls.__name__}"
        assert pickle.loads(pickle.dumps(cls("x"))).args == ("x",)


def test_a_warnings_filter_naming_mockpool_history_still_matches(pytester: pytest.Pytester) -> None:
    # A filter resolves ``mockpool.history.MockPoolHistoryWarning`` by importing the package and
    # taking the attribute, then matches warnings by ``issubclass``: the re-exported class must
    # be the one the store warns with. (Python's own ``-W`` option cannot name it: on 3.11 it
    # reads its filters before site-packages are on ``sys.path``, whatever the module layout.)
    bad = pytester.path / "h.json"
    bad.write_text("{not json")
    pytester.makepyfile(
        test_load=f"from mockpool.history import History\n\ndef test_load():\n    History.load({str(bad)!r})\n"
    )
    name = "mockpool.history.MockPoolHistoryWarning"

    def run(*filters: str) -> pytest.RunResult:
        # Every other warning ignored, so only a filter matching the class can fail the test.
        listed = ", ".join(f'"{f}"' for f in ("ignore", *filters))
        pytester.makepyprojecttoml(
            f'[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
            f"filterwarnings = [{listed}]\n"
        )
        return pytester.runpytest("-p", "no:cacheprovider")

    run().assert_outcomes(passed=1)
    run(f"always::{name}").assert_outcomes(passed=1, warnings=1)
    result = run(f"error::{name}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E * {name}: mockpool: ignoring history file*"])
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nfilterwarnings = ["ignore"]\n')
    pytester.runpytest("-p", "no:cacheprovider", "-W", f"error::{name}").assert_outcomes(failed=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=MockPoolHistoryWarning)
        with pytest.raises(MockPoolHistoryWarning, match="JSONDecodeError"):
            History.load(bad)


def test_two_pools_on_one_history_file_both_keep_their_run(tmp_path: Path) -> None:
    """Two pools of one process (a session's and one a module makes for its own services)
    read the same file when made and write it as each closes. The second wrote what it had
    read, merged with its own run: the first one's run was lost, and the next run warmed
    nothing for its services. Each close merges its run into the file as it is then."""
    path = tmp_path / "history.json"
    first, second = MockPool(history=path), MockPool(history=path)
    first.register(ServiceSpec(name="a", factory=dict))
    second.register(ServiceSpec(name="b", factory=dict))

    async def run() -> None:
        # Both made before either closes; second closes (and saves) first.
        async with first, second, first.acquire("a"), first.acquire("a"), second.acquire("b"):
            pass

    asyncio.run(run())
    history = History.load(path)
    assert history.runs == 2
    assert (history.settled("a"), history.settled("b")) == (2, 1)
    nxt = MockPool(history=path)
    nxt.register(ServiceSpec(name="a", factory=dict))
    nxt.register(ServiceSpec(name="b", factory=dict))
    assert nxt.warm_targets() == {"a": 2, "b": 1}
