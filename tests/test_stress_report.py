"""The stress suite's figures: its table (rows, legends, names never cut), its JSON and its plot,
from a real run of 80 tests with faults."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from mockpool.report import HIT_LEGEND, format_percent, format_seconds
from stress.cli import parse_args, run
from stress.plot import plot_timeline, size_changes, window_waits
from stress.results import RECOVERIES_LEGEND, StressResult, _tiers
from stress.scenario import make_cases
from stress.timeline import Sample, Timeline


@pytest.fixture(scope="module")
def stress_run() -> tuple[StressResult, Timeline]:
    return asyncio.run(run(parse_args(["--tests", "80", "--faults", "0.1", "--seed", "1"])))


def _render(result: StressResult, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    for table in result.tables(console.width):
        console.print(table)
    return console.export_text().splitlines()


def _rows(lines: list[str], names: list[str]) -> dict[str, list[list[str]]]:
    """Per service, the cells of each table row that starts with its name."""
    rows: dict[str, list[list[str]]] = {name: [] for name in names}
    for line in lines:
        cells = line.split()
        if cells and cells[0] in rows:
            rows[cells[0]].append(cells[1:])
    return rows


def _expected(result: StressResult, name: str) -> tuple[list[str], list[str]]:
    s = result.stats[name]
    tiers = "/".join(str(s.recoveries[t]) for t in ("snapshot", "factory", "minimal", "stub"))
    load = [
        str(s.size),
        str(s.peak_in_use),
        str(s.acquisitions),
        format_percent(s.hits, s.served),
        format_percent(s.reuses, s.served),
        format_seconds(s.wait_p50_s) if s.served or s.timeouts else "-",
        format_seconds(s.wait_p99_s) if s.served or s.timeouts else "-",
        str(s.timeouts),
    ]
    faults = [
        str(s.resets),
        str(s.reset_failures),
        str(s.health_failures),
        tiers if s.recoveries.total() else "0",
        str(s.degraded_leases),
        str(s.leaks),
    ]
    return load, faults


def test_one_table_when_it_fits_with_every_figure_and_both_legends(
    stress_run: tuple[StressResult, Timeline],
) -> None:
    result, _ = stress_run
    lines = _render(result, 200)
    rows = _rows(lines, list(result.stats))
    for name in result.stats:
        load, faults = _expected(result, name)
        assert rows[name] == [load + faults], name
    # The captions wrap at the table's width: compare the words.
    words = " ".join(" ".join(lines).split())
    assert HIT_LEGEND in words
    assert RECOVERIES_LEGEND in words
    assert any(sum(s.recoveries.values()) for s in result.stats.values()), "the run should recover"


def test_long_names_are_never_cut_at_120_columns(stress_run: tuple[StressResult, Timeline]) -> None:
    """A service name of 40 characters: the table splits into load and fault tables, each
    within 120 columns, each with the whole name and whole figures."""
    result, _ = stress_run
    long = "device_session_for_the_living_room_tv_04"
    renamed = {(long if n == "device_session" else n): s for n, s in result.stats.items()}
    wide = dataclasses.replace(result, stats=renamed)
    lines = _render(wide, 120)
    assert max(map(len, lines)) <= 120
    rows = _rows(lines, list(renamed))
    load, faults = _expected(result, "device_session")
    assert rows[long] == [load, faults]


def test_a_service_no_test_acquired_shows_dashes_not_a_rate_of_0_or_a_wait_of_0_s() -> None:
    result, _ = asyncio.run(run(parse_args(["--tests", "3"])))  # cache, cache, redis
    rows = _rows(_render(result, 200), list(result.stats))
    assert rows["plex"] == [["0", "0", "0", "-", "-", "-", "-", "0", "0", "0", "0", "0", "0", "0"]]
    assert rows["cache"][0][2:5] == ["2", "0.0", "50.0"]  # a miss, then a release's reuse


def test_acquisitions_that_were_all_cancelled_show_no_wait_and_no_rate(
    stress_run: tuple[StressResult, Timeline],
) -> None:
    """Cancelled acquisitions record no wait: the table read "wait p50 0us" (served at once)
    for a service whose two acquisitions were both cancelled, where the pool's report shows a
    dash; and a run that served nothing read "hit 0.0%" in its summary and 0.0 in its JSON."""
    result, _ = stress_run
    plex = result.stats["plex"]
    cancelled = dataclasses.replace(
        plex, acquisitions=2, hits=0, reuses=0, misses=0, timeouts=0, cancellations=2, acquire_errors=0
    )
    run = dataclasses.replace(result, stats={"plex": cancelled})
    (row,) = _rows(_render(run, 200), ["plex"])["plex"]
    assert row[2:7] == ["2", "-", "-", "-", "-"]  # acq, hit %, reuse %, wait p50, wait p99
    data = run.to_dict()
    assert (data["hit_rate"], data["reuse_rate"]) == (None, None)
    console = Console(width=300, record=True, file=io.StringIO())
    run.print_summary(console)
    assert "hit -  reuse -" in console.export_text()


def test_a_rate_short_of_100_is_not_printed_as_100(stress_run: tuple[StressResult, Timeline]) -> None:
    """2,499 hits and a miss read ``hit % 100.0`` in the table and ``hit 100.0%`` in the line
    under it: as if no test had waited for a creation."""
    result, _ = stress_run
    nearly = dataclasses.replace(
        result.stats["plex"],
        acquisitions=2500,
        hits=2499,
        reuses=2499,
        misses=1,
        hit_rate=0.9996,
        reuse_rate=0.9996,
        timeouts=0,
        cancellations=0,
        acquire_errors=0,
    )
    run = dataclasses.replace(result, stats={"plex": nearly})
    (row,) = _rows(_render(run, 200), ["plex"])["plex"]
    assert row[2:5] == ["2500", "99.9", "99.9"]  # acq, hit %, reuse %
    # The JSON rounded the rate to 4 places: 24,999 of 25,000 read 1.0.
    tens = dataclasses.replace(nearly, acquisitions=25000, hits=24999, reuses=24999)
    data = dataclasses.replace(result, stats={"plex": tens}).to_dict()
    assert (data["hit_rate"], data["reuse_rate"]) == (24999 / 25000, 24999 / 25000)
    console = Console(width=300, record=True, file=io.StringIO())
    run.print_summary(console)
    assert "hit 99.9%  reuse 99.9%" in console.export_text()


def test_recovery_tiers_are_told_apart() -> None:
    assert _tiers({"snapshot": 0, "factory": 0, "minimal": 0, "stub": 0}) == "0"
    assert _tiers({"snapshot": 16, "factory": 1, "minimal": 2, "stub": 3}) == "16/1/2/3"
    assert _tiers({"snapshot": 0, "factory": 0, "minimal": 0, "stub": 4}) == "0/0/0/4"


def test_json_and_summary_line_report_hit_and_reuse(
    stress_run: tuple[StressResult, Timeline],
) -> None:
    result, _ = stress_run
    data = json.loads(json.dumps(result.to_dict()))
    stats = result.stats.values()
    served = sum(s.served for s in stats)
    assert data["hit_rate"] == sum(s.hits for s in stats) / served
    assert data["reuse_rate"] == sum(s.reuses for s in stats) / served
    assert data["hit_rate"] < data["reuse_rate"]  # 80 tests at once: most wait, few find one idle
    for name, s in data["services"].items():
        assert (s["reuses"], s["reuse_rate"]) == (result.stats[name].reuses, result.stats[name].reuse_rate)
        assert "last_error" in s and "acquire_errors" in s
    console = Console(width=300, record=True, file=io.StringIO())
    result.print_summary(console)
    text = console.export_text()
    assert f"hit {100 * data['hit_rate']:.1f}%  reuse {100 * data['reuse_rate']:.1f}%" in text


def _sample(t: float, size: int, waits: list[float], zeros: int, faults: int = 0) -> Sample:
    return Sample(
        t_s=t,
        running=1,
        done=0,
        in_use=0,
        size={"a": size, "b": 2},
        waiting={"a": 0, "b": 0},
        hits=0,
        reuses=0,
        served=0,
        rss_mb=0.0,
        waits={"a": waits, "b": []},
        zero_waits={"a": zeros, "b": 0},
        faults={"a": faults, "b": 0},
        recoveries={"a": faults, "b": 0},
        recovery_failures={"a": 0, "b": 0},
        degraded={"a": 0, "b": 0},
    )


def test_plot_reads_waits_per_window_and_leaves_out_constant_sizes() -> None:
    samples = [
        _sample(0.1, 1, [0.2, 0.4], zeros=0),
        _sample(0.2, 2, [], zeros=0),  # nothing ended: no point
        _sample(0.3, 2, [1.0], zeros=3, faults=1),  # 3 of 4 waited 0 s: median 0
    ]
    points = window_waits(samples, "a")
    # Of 0.2 and 0.4 s, the median is 0.2 s (nearest rank), not 0.3 s, which nobody waited.
    assert [(t, p50) for t, p50, _ in points] == [(0.1, pytest.approx(0.2)), (0.3, 0.0)]
    assert [longest for _, _, longest in points] == [0.4, 1.0]
    assert window_waits(samples, "b") == []
    assert size_changes(samples) == (["a"], {"b": 2})


@pytest.mark.slow
def test_plot_is_written(stress_run: tuple[StressResult, Timeline], tmp_path: Path) -> None:
    _, timeline = stress_run
    assert len(timeline.samples) >= 2
    path = tmp_path / "run.png"
    plot_timeline(timeline, path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hold_makes_the_tests_await_in_their_leases_and_is_bounded() -> None:
    """``--hold S``: the tests await a mean of S seconds in the middle of each lease (the
    runs that found the group faults of 2026-12-03 held 5 and 20 ms)."""
    result, _ = asyncio.run(run(parse_args(["--tests", "9", "--hold", "0.002"])))
    assert result.ok and result.outcomes.done == 9
    # The shortest hold drawn for these nine tests is a floor under every service's holds.
    floor = min(c.hold_s for c in make_cases(9, seed=0, hold_s=0.002))
    assert floor > 0
    assert all(s.hold_p50_s >= floor for s in result.stats.values() if s.acquisitions)
    with pytest.raises(SystemExit):
        parse_args(["--hold", "-1"])


def test_the_summary_line_shows_the_warm_up_it_had(stress_run: tuple[StressResult, Timeline]) -> None:
    """No warm-up read ``warm-up 0.00s`` (as if one ran, instantly), and one of 27 us read the
    same: a dash for none, and the unit of the pool's report for a short one."""
    result, _ = stress_run

    def line(warmup_s: float | None) -> str:
        console = Console(width=300, record=True, file=io.StringIO())
        dataclasses.replace(result, warmup_s=warmup_s).print_summary(console)
        return console.export_text()

    assert "|  warm-up -" in line(None)
    assert "|  warm-up 27us" in line(0.000027)
    assert "|  warm-up 1.50s" in line(1.5)
