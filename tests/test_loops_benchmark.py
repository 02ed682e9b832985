"""The per-loop benchmark (``benchmarks/loops.py``): a tiny real run prints every line, and
each test really ran in a loop of its own. Wall times are never asserted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from benchmarks import loops


def test_a_tiny_run_prints_every_line_and_writes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "loops.json"
    assert loops.main(["--leases", "3", "--rounds", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert list(figures) == [
        "asyncio.run, empty",
        "redis, pooled",
        "redis, plugin's path",
        "redis, fresh",
        "sql, pooled",
        "sql, fresh",
    ]
    assert all(us > 0 for us in figures.values())
    for label, us in figures.items():
        assert f"{label:<20} {us:8.0f}" in printed
    redis = figures["redis, fresh"] / figures["redis, pooled"]
    assert f"redis: fresh / pooled {redis:.2f}x" in printed


def test_each_test_runs_in_a_loop_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[asyncio.AbstractEventLoop] = []
    real = asyncio.run

    def spy(main: object) -> None:
        async def wrapped() -> None:
            seen.append(asyncio.get_running_loop())
            await main  # type: ignore[misc]

        real(wrapped())

    monkeypatch.setattr(asyncio, "run", spy)
    loops.measure(leases=2, rounds=1, supervise=False)
    assert len(seen) == 12  # six lines, two tests each
    assert len({id(loop) for loop in seen}) >= 2 and all(loop.is_closed() for loop in seen)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(SystemExit):
        loops.main(["--leases", "0"])
