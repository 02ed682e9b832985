"""What the run reports: per process, the figures the summary needs (plain JSON, so they
cross execnet from xdist workers); merged across processes, the ``mockpool`` section of the
terminal summary and the JSON report (``mockpool_report``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from .runners import join_runners, runner_names
from .state import get_state

if TYPE_CHECKING:
    from ..pool import MockPool
    from .state import State


def services_payload(pool: MockPool) -> dict[str, dict[str, Any]]:
    """Per service, what the summary needs, as plain JSON (it crosses execnet): counters and
    the kept wait samples, so percentiles merge exactly across workers."""
    payload = {}
    for name, stats in pool.stats().items():
        metrics = pool.service_pools[name].metrics
        payload[name] = {
            "acquisitions": stats.acquisitions,
            "hits": stats.hits,
            "reuses": stats.reuses,
            "misses": stats.misses,
            "recoveries": dict(stats.recoveries.items()),
            "leaks": stats.leaks,
            "degraded_leases": stats.degraded_leases,
            "timeouts": stats.timeouts,
            "cancellations": stats.cancellations,
            "acquire_errors": stats.acquire_errors,
            "resets": stats.resets,
            "reset_failures": stats.reset_failures,
            "isolation_failures": stats.isolation_failures,
            "last_error": stats.last_error,
            "last_reset_error": stats.last_reset_error,
            # The waits as ServiceMetrics.wait_percentiles reads them: the zeros counted, the
            # rest recorded (``waits`` keeps the latest of them).
            "zero_waits": metrics.zero_waits(),
            "recorded_waits": metrics.waits.count,
            "waits": metrics.waits.values(),
        }
    return payload


@dataclass
class _Row:
    acquisitions: int = 0
    hits: int = 0
    reuses: int = 0
    misses: int = 0
    #: Per tier, as ``PoolStats.recoveries`` (the report's one type for them).
    recoveries: dict[str, int] = field(default_factory=dict)
    leaks: int = 0
    degraded_leases: int = 0
    timeouts: int = 0
    #: With the timeouts, the acquisitions not served: the four add up to ``acquisitions``.
    cancellations: int = 0
    acquire_errors: int = 0
    resets: int = 0
    reset_failures: int = 0
    isolation_failures: int = 0
    last_error: str | None = None
    last_reset_error: str | None = None
    zero_waits: int = 0
    #: Per process, its ring's kept waits and how many it recorded (each weighs what it had).
    waits: list[tuple[list[float], int]] = field(default_factory=list)

    @property
    def served(self) -> int:
        """Acquisitions that got an instance: hits, reuses after a wait, misses."""
        return self.reuses + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.served if self.served else 0.0

    @property
    def reuse_rate(self) -> float:
        return self.reuses / self.served if self.served else 0.0

    def wait_percentiles(self, *qs: float) -> tuple[float, ...]:
        from ..metrics import merged_wait_percentiles  # numpy: loaded at the session's end only

        return merged_wait_percentiles(self.waits, self.zero_waits, *qs)

    def reset_problem(self, name: str) -> str | None:
        from ..metrics import reset_problem

        return reset_problem(
            name,
            self.resets,
            self.reset_failures,
            self.last_reset_error or self.last_error,
            isolation=self.isolation_failures > 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """The merged row, null where the summary shows a dash (as ``PoolStats.to_dict``)."""
        p50, p99 = self.wait_percentiles(50, 99)
        served = self.served > 0
        waited = served or self.timeouts > 0
        return {
            "acquisitions": self.acquisitions,
            "hits": self.hits,
            "reuses": self.reuses,
            "misses": self.misses,
            "hit_rate": self.hit_rate if served else None,
            "reuse_rate": self.reuse_rate if served else None,
            "wait_p50_s": p50 if waited else None,
            "wait_p99_s": p99 if waited else None,
            "recoveries": dict(self.recoveries),
            "leaks": self.leaks,
            "degraded_leases": self.degraded_leases,
            "timeouts": self.timeouts,
            "cancellations": self.cancellations,
            "acquire_errors": self.acquire_errors,
            "resets": self.resets,
            "reset_failures": self.reset_failures,
            "last_error": self.last_error,
        }


def _merge(outputs: Iterable[Mapping[str, Any]]) -> dict[str, _Row]:
    rows: dict[str, _Row] = {}
    for out in outputs:
        for name, s in out.get("services", {}).items():
            row = rows.setdefault(name, _Row())
            for counter in (
                "acquisitions",
                "hits",
                "reuses",
                "misses",
                "leaks",
                "degraded_leases",
                "timeouts",
                "cancellations",
                "acquire_errors",
                "resets",
                "reset_failures",
                "isolation_failures",
                "zero_waits",
            ):
                setattr(row, counter, getattr(row, counter) + int(s[counter]))
            # Workers end in no particular order: any worker's last error is as recent as another's.
            row.last_error = s["last_error"] or row.last_error
            row.last_reset_error = s["last_reset_error"] or row.last_reset_error
            row.waits.append(([float(w) for w in s["waits"]], int(s["recorded_waits"])))
            for tier, n in s["recoveries"].items():
                row.recoveries[tier] = row.recoveries.get(tier, 0) + int(n)
    return rows


def _secs(value: float) -> str:
    from ..report import format_seconds  # the pool's modules load when the pool is first used

    return format_seconds(value)


def summary_table(rows: Mapping[str, _Row]) -> list[tuple[str, ...]]:
    """The ``mockpool`` section's table: its header, then a row per service."""
    from ..report import format_percent

    header = (
        "service",
        "acquisitions",
        "hit rate",
        "reuse rate",
        "wait p50",
        "wait p99",
        "reset fail",
        "recoveries",
        "leaks",
        "degraded",
        # Acquisitions that were not served: the rates leave them out, the waits count them.
        "timeouts",
    )
    table: list[tuple[str, ...]] = [header]
    for name, r in rows.items():
        p50, p99 = r.wait_percentiles(50, 99)
        served = r.served
        table.append(
            (
                name,
                str(r.acquisitions),
                # Nothing served, nothing waited: a dash, not a rate of 0 or a wait of 0 s.
                f"{format_percent(r.hits, served)}%" if served else "-",
                f"{format_percent(r.reuses, served)}%" if served else "-",
                _secs(p50) if served or r.timeouts else "-",
                _secs(p99) if served or r.timeouts else "-",
                str(r.reset_failures),
                str(sum(r.recoveries.values())),
                str(r.leaks),
                str(r.degraded_leases),
                str(r.timeouts),
            )
        )
    return table


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    state = get_state(config)
    if state is None or not state.settings.summary or state.worker_id is not None or not state.outputs:
        return
    rows = _merge(state.outputs)
    tr = terminalreporter
    processes = len(state.outputs)
    tr.write_sep("=", "mockpool" + (f" ({processes} workers)" if state.controller else ""))
    table = summary_table(rows)
    header = table[0]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        tr.write_line(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    from ..report import HIT_LEGEND

    tr.write_line(HIT_LEGEND)
    for name, r in rows.items():
        problem = r.reset_problem(name)
        if problem is not None:
            tr.write_line(f"problem: {problem}", red=True, bold=True)
    errors = {name: r.last_error for name, r in rows.items() if r.last_error}
    if errors:
        tr.write_line("last errors:")
        for name, error in errors.items():
            tr.write_line(f"  {name}: {error}")
    leaks = [leak for out in state.outputs for leak in out.get("leaks", ())]
    if leaks:
        tr.write_line(f"leaked leases ({len(leaks)}):")
        # One line per distinct leak: a Hypothesis test leaks once per example, from one line.
        lines: dict[str, int] = {}
        for leak in leaks:
            line = f"  {leak['test']}: {leak['service']!r} acquired at {leak['where']} ({leak['phase']})"
            lines[line] = lines.get(line, 0) + 1
        for line, count in lines.items():
            tr.write_line(line if count == 1 else f"{line}, {count} times")
    warmed: dict[str, int] = {}
    for out in state.outputs:
        for name, n in out.get("warmed", {}).items():
            warmed[name] = warmed.get(name, 0) + int(n)
    if warmed:
        tr.write_line("warmed ahead: " + ", ".join(f"{name}={n}" for name, n in warmed.items()))
    if state.history_note:
        tr.write_line(state.history_note)


def write_report(state: State) -> None:
    path = state.settings.report
    if path is None or not state.outputs:
        return
    if len(state.outputs) == 1 and state.outputs[0].get("worker") is None:
        data = dict(state.outputs[0]["report"])
    else:
        rows = _merge(state.outputs)
        data = {
            "pool": "pytest",
            "services": {name: row.to_dict() for name, row in rows.items()},
            "problems": [p for name, row in rows.items() if (p := row.reset_problem(name)) is not None],
            "workers": {str(out.get("worker")): out["report"] for out in state.outputs},
        }
    # What the processes that ran the tests saw (a worker's collection), not the controller's
    # guess from the configuration.
    runners = [out["runner"] for out in state.outputs if out.get("runner")]
    data["pytest"] = {
        "runner": join_runners(runners) if runners else state.runner or runner_names(state.config),
        # The pools the figures cover: 1 without xdist (as the summary's "N workers").
        "workers": len(state.outputs),
        "leaks": [leak for out in state.outputs for leak in out.get("leaks", ())],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
