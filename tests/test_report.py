"""``Report``: every figure it prints and serialises, read back from the text and the JSON."""

from __future__ import annotations

import asyncio
import json
import re

import anyio
import pytest

from mockpool import MockPool, MockPoolError, PoolStats, ServiceSpec
from mockpool.report import HIT_LEGEND, Report, format_seconds


async def _settle() -> None:
    for _ in range(3):
        await anyio.wait_all_tasks_blocked()
        await asyncio.sleep(0)


def _broken_reset(instance: dict[str, int]) -> None:
    raise AttributeError("'AsyncFakeSocket' object has no attribute 'kill'")


async def _report() -> Report:
    """``steady``: a miss, a reuse after a wait, two hits. ``flaky``: every reset fails."""
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="steady", factory=dict, max_size=1))
    pool.register(ServiceSpec(name="flaky", factory=dict, reset=_broken_reset, max_size=1))
    async with pool:
        holder = pool.acquire("steady")
        await holder.__aenter__()
        waiting = pool.acquire("steady")
        task = asyncio.create_task(waiting.__aenter__())
        await _settle()
        await holder.__aexit__(None, None, None)
        await task
        await waiting.__aexit__(None, None, None)
        for _ in range(2):
            async with pool.acquire("steady"):
                pass
        for _ in range(3):
            async with pool.acquire("flaky"):
                pass
            await _settle()  # recovery rebuilds it before the next lease
        return pool.report()


def _rows(text: str) -> dict[str, dict[str, str]]:
    """The table of ``str(report)`` as {service: {column: cell}}."""
    lines = text.splitlines()
    header = re.split(r"\s{2,}", lines[1].strip())
    rows = {}
    for line in lines[3:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


@pytest.mark.asyncio
async def test_text_shows_hit_and_reuse_side_by_side_and_reset_failures() -> None:
    report = await _report()
    text = str(report)
    rows = _rows(text)
    assert list(rows) == ["steady", "flaky"]
    steady, flaky = rows["steady"], rows["flaky"]
    assert (steady["acq"], steady["hit %"], steady["reuse %"]) == ("4", "50.0", "75.0")
    assert (steady["resets"], steady["reset fail"], steady["rec"], steady["timeouts"]) == ("4", "0", "0", "0")
    assert (steady["size"], steady["idle"]) == ("1", "1")
    # Two hits (0 s) and two waits: the median is a hit's 0 s (nearest rank, not halfway to
    # the shorter wait, which nobody waited), the p99 the longer wait.
    assert steady["wait p50"] == format_seconds(report.services["steady"].wait_p50_s) == "0us"
    assert 0.0 == report.services["steady"].wait_p50_s < report.services["steady"].wait_p99_s
    assert (flaky["acq"], flaky["hit %"], flaky["reuse %"]) == ("3", "66.7", "66.7")
    assert (flaky["resets"], flaky["reset fail"], flaky["rec"]) == ("0", "3", "3")
    assert HIT_LEGEND in text.splitlines()


async def _unused_and_starved() -> Report:
    """The report of a pool with a service nothing acquired and one whose only acquisition
    beyond its single instance timed out."""
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="unused", factory=dict))
    pool.register(ServiceSpec(name="starved", factory=dict, max_size=1))
    async with pool:
        async with pool.acquire("starved"):
            with pytest.raises(TimeoutError):
                async with pool.acquire("starved", timeout=0.01):
                    pass
        return pool.report()


@pytest.mark.asyncio
async def test_text_shows_a_dash_for_the_rates_and_waits_of_a_service_nothing_acquired() -> None:
    """No acquisition: no rate and no wait to show, rather than a hit rate of 0 % (which reads
    as every acquisition missing) and a wait of 0 s. Timed out only: the waits, but no rate."""
    rows = _rows(str(await _unused_and_starved()))
    unused = rows["unused"]
    cells = [unused[c] for c in ("hit %", "reuse %", "wait p50", "wait p99", "hold ewma")]
    assert (unused["acq"], cells) == ("0", ["-"] * 5)
    starved = rows["starved"]
    assert (starved["acq"], starved["timeouts"], starved["hit %"]) == ("2", "1", "0.0")
    assert starved["wait p99"] not in ("-", "0us")  # the timed-out wait


def test_acquisitions_that_failed_before_they_could_wait_are_no_waits_of_0_s() -> None:
    """Acquiring under trio fails before it can queue (mockpool runs on asyncio): five such
    failures showed a median wait of 0 s, which reads as "served at once". A dash now."""
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict))

    async def under_trio() -> None:
        for _ in range(5):
            with pytest.raises(MockPoolError, match="trio is not supported"):
                async with pool.acquire("db"):
                    pass

    anyio.run(under_trio, backend="trio")
    metrics = pool.service_pools["db"].metrics
    assert (metrics.acquisitions, metrics.acquire_errors, metrics.zero_waits()) == (5, 5, 0)
    db = _rows(str(pool.report()))["db"]
    assert (db["acq"], db["wait p50"], db["wait p99"]) == ("5", "-", "-")
    pool.close()


@pytest.mark.asyncio
async def test_text_reports_resets_that_always_fail_as_a_problem_and_the_last_errors() -> None:
    lines = str(await _report()).splitlines()
    error = "AttributeError: 'AsyncFakeSocket' object has no attribute 'kill'"
    assert (
        f"problem: service 'flaky': 3 of 3 resets failed, so those leases rebuilt their instance "
        f"(last error: {error}); the reset hook raises: fix it, or remove reset="
    ) in lines
    start = lines.index("last errors:")
    assert lines[start + 1 :] == [f"  flaky: {error}"]


@pytest.mark.asyncio
async def test_json_carries_the_same_figures() -> None:
    data = json.loads((await _report()).to_json())
    steady, flaky = data["services"]["steady"], data["services"]["flaky"]
    assert (steady["hits"], steady["reuses"], steady["misses"]) == (2, 3, 1)
    assert (steady["hit_rate"], steady["reuse_rate"]) == (0.5, 0.75)
    assert (steady["timeouts"], steady["cancellations"], steady["acquire_errors"]) == (0, 0, 0)
    assert (steady["last_error"], steady["last_reset_error"]) == (None, None)
    assert (flaky["reset_failures"], flaky["resets"]) == (3, 0)
    assert (
        flaky["last_error"]
        == flaky["last_reset_error"]
        == ("AttributeError: 'AsyncFakeSocket' object has no attribute 'kill'")
    )
    assert (flaky["size"], flaky["created"], flaky["destroyed"]) == (1, 4, 3)
    problem = (
        "service 'flaky': 3 of 3 resets failed, so those leases rebuilt their instance "
        "(last error: AttributeError: 'AsyncFakeSocket' object has no attribute 'kill'); "
        "the reset hook raises: fix it, or remove reset="
    )
    assert data["problems"] == [problem]


@pytest.mark.asyncio
async def test_a_healthy_pool_has_no_problem_and_no_error_lines() -> None:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="svc", factory=dict))
    async with pool:
        async with pool.acquire("svc"):
            pass
        report = pool.report()
    text = str(report)
    assert "problem:" not in text
    assert "last errors:" not in text
    assert report.to_dict()["problems"] == []


@pytest.mark.asyncio
async def test_json_has_null_where_the_text_shows_a_dash() -> None:
    """A rate, a wait or a hold of nothing is null in the JSON, not 0.0 (which reads as every
    acquisition missing, or as served at once), as the text shows a dash."""
    report = await _unused_and_starved()
    data = json.loads(report.to_json())
    figures = (
        "hit_rate",
        "reuse_rate",
        "wait_p50_s",
        "wait_p99_s",
        "wait_ewma_s",
        "hold_p50_s",
        "hold_ewma_s",
    )
    unused = data["services"]["unused"]
    assert (unused["acquisitions"], {key: unused[key] for key in figures}) == (0, dict.fromkeys(figures))
    assert report.services["unused"].hit_rate == 0.0  # the attribute stays a float
    starved = data["services"]["starved"]  # one miss, one timeout: figures of something
    assert (starved["acquisitions"], starved["hit_rate"], starved["reuse_rate"]) == (2, 0.0, 0.0)
    assert starved["wait_p99_s"] > 0.0


@pytest.mark.asyncio
async def test_the_waiting_column_counts_acquirers_and_is_not_a_wait() -> None:
    """The column of acquirers waiting right now sat beside ``wait p50`` and ``wait p99`` under
    the header ``wait``: ``wait 0`` beside ``wait p50 950ms`` read as "waited 0"."""
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="one", factory=dict, max_size=1))
    async with pool:
        async with pool.acquire("one"):
            waiter = asyncio.create_task(pool.acquire("one").__aenter__())
            await _settle()
            text = str(pool.report())
        await waiter
    header = re.split(r"\s{2,}", text.splitlines()[1].strip())
    assert "wait" not in header
    assert _rows(text)["one"]["waiting"] == "1"


@pytest.mark.asyncio
async def test_the_legend_gives_the_rates_and_waits_their_denominators() -> None:
    """A miss, a hit and a timeout: 3 acquisitions, a hit rate of 50 %. Read as a share of the
    3, it is 1.5 hits; the legend says the rates count the acquisitions served, and that the
    waits count the timed-out one too."""
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="one", factory=dict, max_size=1))
    async with pool:
        async with pool.acquire("one"):
            pass
        async with pool.acquire("one"):
            with pytest.raises(TimeoutError):
                async with pool.acquire("one", timeout=0.01):
                    pass
        text = str(pool.report())
    one = _rows(text)["one"]
    assert (one["acq"], one["hit %"], one["reuse %"], one["timeouts"]) == ("3", "50.0", "50.0", "1")
    assert "rates are shares of the acquisitions served" in HIT_LEGEND
    assert "over those served or timed out" in HIT_LEGEND
    assert HIT_LEGEND in text.splitlines()


async def _group_pool() -> tuple[str, dict[str, PoolStats]]:
    """A group ``pair`` over ``a`` and ``b``, leased once and released: its idle instance
    keeps one instance of each member. Returns the report's text and the stats."""
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="a", factory=dict))
    pool.register(ServiceSpec(name="b", factory=dict))
    pool.register(ServiceSpec(name="pair", factory=lambda a, b: (a, b), depends_on=("a", "b")))
    async with pool:
        async with pool.acquire("pair"):
            pass
        await _settle()
        text = str(pool.report())
        stats = pool.stats()
    return text, stats


@pytest.mark.asyncio
async def test_members_lent_to_groups_are_told_apart_from_leases() -> None:
    """No test holds anything, yet ``a`` and ``b`` read ``in use 1`` (with 0 acquisitions):
    their instances are held by the idle ``pair`` instance. ``lent`` says how many of the
    ``in use`` are such, and the text names them under the table."""
    text, stats = await _group_pool()
    for name in ("a", "b"):
        s = stats[name]
        assert (s.acquisitions, s.in_use, s.lent, s.idle, s.size) == (0, 1, 1, 0, 1)
        assert s.to_dict()["lent"] == 1
        assert _rows(text)[name]["in use"] == "1"
    assert stats["pair"].lent == 0
    assert (
        "lent to groups (counted in use, held by group instances, not by tests): a=1, b=1"
        in text.splitlines()
    )


@pytest.mark.asyncio
async def test_the_learning_figures_have_null_rates_where_nothing_was_served() -> None:
    """In one JSON report, ``services.unused.hit_rate`` was null and
    ``learning.unused.hit_rate`` 0.0: the same figure, read as nothing and as every miss."""
    data = json.loads((await _unused_and_starved()).to_json())
    for name in ("unused", "starved"):
        for key in ("hit_rate", "reuse_rate"):
            assert data["learning"][name][key] == data["services"][name][key], (name, key)
    assert data["learning"]["unused"]["hit_rate"] is None


@pytest.mark.asyncio
async def test_json_has_a_null_error_rate_for_a_service_never_acquired() -> None:
    """``error_rate`` is a share of the leases, failed resets and health checks: with none of
    them, 0.0 would read "no errors"."""
    data = json.loads((await _unused_and_starved()).to_json())
    assert data["services"]["unused"]["error_rate"] is None
    assert data["services"]["starved"]["error_rate"] == 0.0


def test_a_rate_reads_100_or_0_only_when_it_is_all_or_none() -> None:
    """2,499 hits of 2,500 printed as ``100.0``: read as "every acquisition found one idle"
    beside the one that waited. Rounded to one decimal, a rate of some but not all stops at
    99.9, one of more than none at 0.1."""
    from mockpool.report import format_percent

    assert format_percent(2499, 2500) == "99.9"  # 99.96 %
    assert format_percent(1, 2500) == "0.1"  # 0.04 %
    assert format_percent(2500, 2500) == "100.0"
    assert format_percent(0, 2500) == "0.0"
    assert format_percent(1, 3) == "33.3"
    assert format_percent(2, 3) == "66.7"
    assert format_percent(0, 0) == "-"  # a share of nothing


@pytest.mark.asyncio
async def test_the_table_prints_no_100_for_a_rate_short_of_it() -> None:
    """The report's table: 2,499 hits and one miss read ``hit % 100.0``."""
    import dataclasses

    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="svc", factory=dict))
    async with pool:
        async with pool.acquire("svc"):
            pass
        stats = pool.stats("svc")
    nearly = dataclasses.replace(
        stats, acquisitions=2500, hits=2499, reuses=2499, misses=1, hit_rate=0.9996, reuse_rate=0.9996
    )
    row = _rows(str(Report(pool="p", services={"svc": nearly})))["svc"]
    assert (row["acq"], row["hit %"], row["reuse %"]) == ("2500", "99.9", "99.9")


@pytest.mark.asyncio
async def test_no_hold_time_while_no_lease_has_ended() -> None:
    """One acquisition, still held: the table read ``hold ewma 0us`` and the JSON 0.0, a hold
    of nothing read as leases returned at once. A dash and null until a lease ends."""
    pool = MockPool(name="p", supervise=False)
    pool.register(ServiceSpec(name="svc", factory=dict))
    holds = ("hold_p50_s", "hold_p99_s", "hold_ewma_s")
    async with pool:
        lease = pool.acquire("svc")
        await lease.__aenter__()
        held = pool.report()
        await lease.__aexit__(None, None, None)
        ended = pool.report()
    assert (held.services["svc"].served, held.services["svc"].released) == (1, 0)
    assert _rows(str(held))["svc"]["hold ewma"] == "-"
    data = held.to_dict()["services"]["svc"]
    assert {key: data[key] for key in holds} == dict.fromkeys(holds)
    assert ended.services["svc"].released == 1
    assert _rows(str(ended))["svc"]["hold ewma"] != "-"
    assert all(isinstance(ended.to_dict()["services"]["svc"][key], float) for key in holds)


def test_a_duration_rounds_into_the_next_unit_rather_than_past_its_own() -> None:
    """0.99996 s printed ``1000.0ms`` and 0.9996 ms ``1000us``: a unit read past its range."""
    assert format_seconds(0.99996) == "1.00s"
    assert format_seconds(0.9994) == "999.4ms"
    assert format_seconds(0.0009996) == "1.0ms"
    assert format_seconds(0.0009994) == "999us"
    assert (format_seconds(0.0), format_seconds(2.5), format_seconds(0.0123)) == ("0us", "2.50s", "12.3ms")
