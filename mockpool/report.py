"""``Report``: what a pool knows, as a text table, a dict or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .metrics import PoolStats

__all__ = ("HIT_LEGEND", "Event", "Report", "format_percent", "format_seconds", "format_share")

#: Printed under every table with hit and reuse rates: what each figure counts. The rates'
#: denominator is the acquisitions served, not the ``acq`` column (timeouts are not served);
#: the waits also count the timed-out acquisitions.
HIT_LEGEND = (
    "hit: served at once from idle; reuse: served without a creation (at once or by a release); "
    "both rates are shares of the acquisitions served; wait p50/p99 over those served or timed out, "
    "hits as 0 s"
)


@dataclass(frozen=True, slots=True)
class Event:
    """A decision a supervisor took: when (seconds since the pool was made), for which
    service, what triggered it and what the pool did."""

    at_s: float
    service: str
    trigger: str
    response: str


@dataclass(frozen=True, slots=True)
class Report:
    """Per-service statistics, adaptation events and supervisor errors of one pool."""

    pool: str
    services: Mapping[str, PoolStats]
    events: tuple[Event, ...] = ()
    supervisor_errors: Mapping[str, int] = field(default_factory=dict)
    warmup_s: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain dicts, lists, strings and numbers."""
        return {
            "pool": self.pool,
            "warmup_s": self.warmup_s,
            "services": {name: stats.to_dict() for name, stats in self.services.items()},
            "events": [
                {"at_s": e.at_s, "service": e.service, "trigger": e.trigger, "response": e.response}
                for e in self.events
            ],
            "supervisor_errors": dict(self.supervisor_errors),
            "degraded_leases": {n: s.degraded_leases for n, s in self.services.items() if s.degraded_leases},
            "isolation_failures": {
                n: s.isolation_failures for n, s in self.services.items() if s.isolation_failures
            },
            "problems": self.problems(),
            **dict(self.extra),
        }

    def problems(self) -> list[str]:
        """Sentences about services that work only by accident, each naming the fix: today,
        resets that (almost) always fail, so every lease rebuilds its instance."""
        return [p for s in self.services.values() if (p := s.reset_problem()) is not None]

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def __str__(self) -> str:
        header = (
            "service",
            "size",
            "idle",
            "in use",
            # Acquirers waiting now; not a duration, unlike the wait p50/p99 beside it.
            "waiting",
            "acq",
            "hit %",
            "reuse %",
            "wait p50",
            "wait p99",
            "hold ewma",
            "resets",
            "reset fail",
            "rec",
            "degraded",
            "leaks",
            "timeouts",
        )
        rows = [header]
        for name, s in self.services.items():
            rows.append(
                (
                    name,
                    str(s.size),
                    str(s.idle),
                    str(s.in_use),
                    str(s.waiting),
                    str(s.acquisitions),
                    # Nothing served, nothing waited: a dash, not a rate of 0 or a wait of 0 s.
                    format_percent(s.hits, s.served),
                    format_percent(s.reuses, s.served),
                    format_seconds(s.wait_p50_s) if s.served or s.timeouts else "-",
                    format_seconds(s.wait_p99_s) if s.served or s.timeouts else "-",
                    # Held, none returned yet: no hold time, rather than 0 s.
                    format_seconds(s.hold_ewma_s) if s.released else "-",
                    str(s.resets),
                    str(s.reset_failures),
                    str(s.recoveries.total()),
                    str(s.degraded_leases),
                    str(s.leaks),
                    str(s.timeouts),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"mockpool report: pool {self.pool!r}"]
        if self.warmup_s is not None:
            lines[0] += f", warm-up {format_seconds(self.warmup_s)}"
        for i, row in enumerate(rows):
            lines.append(
                "  ".join(
                    cell.ljust(w) if j == 0 else cell.rjust(w)
                    for j, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(HIT_LEGEND)
        lines.extend(f"problem: {problem}" for problem in self.problems())
        errors = {n: s.last_error for n, s in self.services.items() if s.last_error}
        if errors:
            lines.append("last errors:")
            lines.extend(f"  {n}: {e}" for n, e in errors.items())
        if self.events:
            lines.append("")
            lines.append("adaptations:")
            lines.extend(f"  {e.at_s:8.3f}s  {e.service}: {e.trigger} -> {e.response}" for e in self.events)
        lent = {n: s.lent for n, s in self.services.items() if s.lent}
        if lent:
            lines.append(
                "lent to groups (counted in use, held by group instances, not by tests): "
                + ", ".join(f"{n}={c}" for n, c in lent.items())
            )
        degraded = {n: s.degraded_leases for n, s in self.services.items() if s.degraded_leases}
        if degraded:
            lines.append("degraded leases: " + ", ".join(f"{n}={c}" for n, c in degraded.items()))
        learning = self.extra.get("learning")
        if isinstance(learning, dict):
            predicted = [
                f"{n} size {row['predicted_size']:g}/{row['actual_size']}"
                for n, row in learning.items()
                if row.get("predicted_size") is not None
            ]
            if predicted:
                lines.append("history predicted/actual: " + ", ".join(predicted))
        leaky = {n: s.isolation_failures for n, s in self.services.items() if s.isolation_failures}
        if leaky:
            lines.append(
                "isolation failures (reset left state behind; fix the reset hook): "
                + ", ".join(f"{n}={c}" for n, c in leaky.items())
            )
            found = self.extra.get("isolation")
            if isinstance(found, dict):
                lines.extend(f"  {n}, last found: {detail}" for n, detail in found.items())
        if self.supervisor_errors:
            lines.append(
                "supervisor errors: " + ", ".join(f"{n}={c}" for n, c in self.supervisor_errors.items())
            )
        return "\n".join(lines)


def format_seconds(value: float) -> str:
    """A duration for a table: ``1.23s``, ``4.5ms`` or ``67us``. The unit is picked after
    rounding, so 0.99996 s reads ``1.00s``, not ``1000.0ms``."""
    if round(value * 1e3, 1) >= 1000:
        return f"{value:.2f}s"
    if round(value * 1e6) >= 1000:
        return f"{value * 1e3:.1f}ms"
    return f"{value * 1e6:.0f}us"


def format_percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage with one decimal (:func:`format_share`), ``-``
    when ``whole`` is 0 (a share of nothing)."""
    return "-" if whole <= 0 else format_share(part / whole)


def format_share(share: float) -> str:
    """A share (0 to 1) as a percentage with one decimal: ``100.0`` only when it is all and
    ``0.0`` only when it is none, so 2,499 hits of 2,500 (99.96 %) read ``99.9``, not "every
    one a hit"."""
    text = f"{100 * share:.1f}"
    if share < 1 and text == "100.0":
        return "99.9"
    if share > 0 and text == "0.0":
        return "0.1"
    return text
