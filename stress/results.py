"""What a stress run found: the figures (``--json``), the checks, and the summary table."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from mockpool import PoolStats
from mockpool.metrics import RECOVERY_TIERS
from mockpool.report import HIT_LEGEND, format_percent, format_seconds

from .runner import Outcome, RunOutcomes

__all__ = ("RECOVERIES_LEGEND", "Check", "StressResult")

#: Under the table: what the recoveries column's four numbers are.
RECOVERIES_LEGEND = "recoveries by tier: snapshot restore / factory / minimal (degraded) / stub (degraded)"


@dataclass(frozen=True, slots=True)
class Check:
    """One end-of-run check: its name, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class StressResult:
    """One run of the suite (the pool phase, and the baseline when asked)."""

    tests: int
    seed: int
    faults: float
    outcomes: RunOutcomes
    stats: Mapping[str, PoolStats]
    peak_rss_mb: float
    warmup_s: float | None
    degraded_seen: int
    checks: list[Check] = field(default_factory=list)
    injected: Mapping[str, int] = field(default_factory=dict)
    events: int = 0
    supervisor_errors: Mapping[str, int] = field(default_factory=dict)
    baseline: RunOutcomes | None = None
    baseline_double_s: float | None = None
    baseline_peak_rss_mb: float | None = None
    #: Per service, ms per double ``(pooled, fresh)``, and the ratio over the tests' mix.
    double_cost_ms: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    double_speedup: float | None = None

    # -- figures ------------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        failed = self.outcomes.counts[Outcome.FAILED]
        base_failed = self.baseline.counts[Outcome.FAILED] if self.baseline is not None else 0
        return failed == 0 and base_failed == 0 and all(c.ok for c in self.checks)

    @property
    def hit_rate(self) -> float | None:
        """Served at once by an idle instance, over every service's served acquisitions; None
        when nothing was served (0.0 would read as every acquisition missing)."""
        hits = sum(s.hits for s in self.stats.values())
        served = sum(s.served for s in self.stats.values())
        return hits / served if served else None

    @property
    def reuse_rate(self) -> float | None:
        """Served without a creation (at once or by a release), over the served acquisitions;
        None when nothing was served."""
        reuses = sum(s.reuses for s in self.stats.values())
        served = sum(s.served for s in self.stats.values())
        return reuses / served if served else None

    @property
    def leaks(self) -> int:
        return sum(s.leaks for s in self.stats.values())

    def recoveries(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for s in self.stats.values():
            for tier, count in s.recoveries.items():
                totals[tier] = totals.get(tier, 0) + count
        return totals

    @property
    def degraded(self) -> int:
        return sum(s.degraded_leases for s in self.stats.values())

    @property
    def speedup(self) -> float | None:
        if self.baseline is None or self.outcomes.wall_s <= 0:
            return None
        return self.baseline.wall_s / self.outcomes.wall_s

    @property
    def speedup_with_warmup(self) -> float | None:
        """The speedup when the pooled run also pays for its warm-up (the baseline has none)."""
        if self.baseline is None or self.outcomes.wall_s <= 0:
            return None
        return self.baseline.wall_s / (self.outcomes.wall_s + (self.warmup_s or 0.0))

    def to_dict(self) -> dict[str, Any]:
        out = self.outcomes
        counts = out.counts
        data: dict[str, Any] = {
            "tests": self.tests,
            "passed": counts[Outcome.PASSED],
            "failed": counts[Outcome.FAILED],
            "injected_failures": counts[Outcome.INJECTED],
            "cancelled": counts[Outcome.CANCELLED],
            "ok": self.ok,
            "wall_s": round(out.wall_s, 4),
            "tests_per_s": round(self.tests / out.wall_s, 1) if out.wall_s else None,
            "per_test_ms": round(1e3 * out.wall_s / self.tests, 4) if self.tests else None,
            "warmup_s": None if self.warmup_s is None else round(self.warmup_s, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            # Unrounded: 4 places turned 24,999 hits of 25,000 into 1.0, every one a hit.
            "hit_rate": self.hit_rate,
            "reuse_rate": self.reuse_rate,
            "leaks": self.leaks,
            "recoveries": self.recoveries(),
            "recovery_failures": sum(s.recovery_failures for s in self.stats.values()),
            "degraded": self.degraded,
            "seed": self.seed,
            "faults": self.faults,
            "faults_injected": dict(sorted(self.injected.items())),
            "adaptations": self.events,
            "supervisor_errors": dict(self.supervisor_errors),
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
            "failures": [{"test": t, "error": e} for t, e in out.failures[:50]],
            "services": {name: s.to_dict() for name, s in self.stats.items()},
        }
        if self.baseline is not None:
            base = self.baseline
            data["baseline_wall_s"] = round(base.wall_s, 4)
            data["baseline_passed"] = base.counts[Outcome.PASSED]
            data["baseline_failed"] = base.counts[Outcome.FAILED]
            data["speedup"] = round(self.speedup or 0.0, 2)
            data["speedup_with_warmup"] = round(self.speedup_with_warmup or 0.0, 2)
            data["baseline_double_s"] = (
                None if self.baseline_double_s is None else round(self.baseline_double_s, 4)
            )
            data["double_speedup"] = None if self.double_speedup is None else round(self.double_speedup, 1)
            data["double_cost_ms"] = {
                n: {"pooled": round(p, 4), "fresh": round(f, 4)} for n, (p, f) in self.double_cost_ms.items()
            }
            data["baseline_peak_rss_mb"] = (
                None if self.baseline_peak_rss_mb is None else round(self.baseline_peak_rss_mb, 1)
            )
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)

    # -- the summary --------------------------------------------------------------------------

    def tables(self, width: int) -> list[Table]:
        """The per-service figures, as one table if it fits in ``width`` columns, else as two
        (load, then faults), each repeating the service column. Service names are never cut
        nor wrapped, and figures stay on one line."""
        full = self._table(_LOAD + _FAULTS, caption=f"{HIT_LEGEND}\n{RECOVERIES_LEGEND}")
        if _natural_width(full) <= width:
            return [full]
        return [self._table(_LOAD, caption=HIT_LEGEND), self._table(_FAULTS, caption=RECOVERIES_LEGEND)]

    def _table(self, columns: tuple[_Column, ...], caption: str) -> Table:
        table = Table(
            title=f"mockpool stress: {self.tests} tests, seed {self.seed}, faults {self.faults:g}",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            caption=caption,
            caption_justify="left",
        )
        table.add_column("service", justify="left", no_wrap=True)
        for header, _ in columns:
            table.add_column(header, justify="right", no_wrap=True)
        for name, s in self.stats.items():
            table.add_row(name, *(cell(s) for _, cell in columns))
        return table

    def print_summary(self, console: Console) -> None:
        for table in self.tables(console.width):
            console.print(table)
        d = self.to_dict()
        stats = self.stats.values()
        hits, reuses = sum(s.hits for s in stats), sum(s.reuses for s in stats)
        served = sum(s.served for s in stats)
        # None: the pool did not warm; a dash rather than a warm-up of 0.00 s.
        warmup = "-" if self.warmup_s is None else format_seconds(self.warmup_s)
        line = (
            f"passed {d['passed']}  failed {d['failed']}  injected {d['injected_failures']}  "
            f"cancelled {d['cancelled']}  |  wall {d['wall_s']:.2f}s  {d['tests_per_s']} tests/s  "
            f"peak RSS {d['peak_rss_mb']} MB  hit {_percent(hits, served)}  reuse {_percent(reuses, served)}  "
            f"leaks {d['leaks']}  "
            f"degraded {d['degraded']}  |  warm-up {warmup}"
        )
        console.print(line)
        if self.injected:
            console.print(
                "faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items()))
            )
        if self.baseline is not None:
            console.print(
                f"baseline (fresh doubles): wall {d['baseline_wall_s']:.2f}s, "
                f"of which making/destroying doubles {d['baseline_double_s']:.2f}s; "
                f"speedup {d['speedup']:.2f}x (wall), {d['speedup_with_warmup']:.2f}x counting the "
                "pool's warm-up"
            )
        if self.double_cost_ms:
            console.print(
                f"a double alone (acquire+release vs build+destroy, serial): {d['double_speedup']}x "
                "over the tests' mix"
            )
            console.print(
                "  ms per double (pooled / fresh): "
                + ", ".join(f"{n} {p:.3f}/{f:.3f}" for n, (p, f) in self.double_cost_ms.items()),
                highlight=False,
            )
        for check in self.checks:
            mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
            console.print(f"  {mark}  {check.name}: {check.detail}", highlight=False)
        for test, error in self.outcomes.failures[:20]:
            console.print(Text.assemble(("  failed ", "red"), f"{test}: {error}"), highlight=False)
        if len(self.outcomes.failures) > 20:
            console.print(f"  ... and {len(self.outcomes.failures) - 20} more")
        console.print("[bold green]OK[/bold green]" if self.ok else "[bold red]FAILED[/bold red]")


#: A column of the summary: its header and how to read a cell from a service's stats.
_Column = tuple[str, Callable[[PoolStats], str]]

_LOAD: tuple[_Column, ...] = (
    ("size", lambda s: str(s.size)),
    ("peak", lambda s: str(s.peak_in_use)),
    ("acq", lambda s: str(s.acquisitions)),
    # Nothing served, nothing waited: a dash, not a rate of 0 or a wait of 0 s (--tests 3). As in
    # the pool's report, the waits are those of the acquisitions served or timed out: a
    # cancelled or failed one recorded none.
    ("hit %", lambda s: format_percent(s.hits, s.served)),
    ("reuse %", lambda s: format_percent(s.reuses, s.served)),
    ("wait p50", lambda s: format_seconds(s.wait_p50_s) if s.served or s.timeouts else "-"),
    ("wait p99", lambda s: format_seconds(s.wait_p99_s) if s.served or s.timeouts else "-"),
    ("timeouts", lambda s: str(s.timeouts)),
)
_FAULTS: tuple[_Column, ...] = (
    ("resets", lambda s: str(s.resets)),
    ("reset fail", lambda s: str(s.reset_failures)),
    ("health fail", lambda s: str(s.health_failures)),
    ("recoveries", lambda s: _tiers(s.recoveries)),
    ("degraded", lambda s: str(s.degraded_leases)),
    ("leaks", lambda s: str(s.leaks)),
)


def _percent(part: int, whole: int) -> str:
    """A rate for the summary line: ``96.6%``, or ``-`` for a rate of nothing; ``100.0%``
    only when all (``format_percent``)."""
    return "-" if whole <= 0 else f"{format_percent(part, whole)}%"


def _natural_width(table: Table) -> int:
    """Columns ``table`` takes when nothing wraps."""
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def _tiers(counts: Mapping[str, int]) -> str:
    """``"12/1/2/3"``: recoveries per tier in ladder order (see ``RECOVERIES_LEGEND``)."""
    if not any(counts.values()):
        return "0"
    return "/".join(str(counts.get(tier, 0)) for tier in RECOVERY_TIERS)
