"""``--plot PATH``: the run over time as a PNG (matplotlib, Agg backend, imported only here).

Panels sharing the time axis, each showing something that moves:

1. tests running, and how many of them wait for an instance;
2. waiters per service;
3. per service, the median wait of the acquisitions that ended in each sampling window
   (hits count 0 s);
4. pool size per service, only if some size changed (a constant size is shown in the next
   panel's lane labels);
5. per service, a lane with the faults (hook failures and discards), recoveries (and failed
   ones) and degraded leases of each window, as markers sized by their count.

Every service has its own colour and marker throughout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mockpool.metrics import wait_percentiles

from .timeline import Sample, Timeline

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ("plot_timeline", "size_changes", "window_waits")

_LEGEND = {
    "faults": "faults (hook failures, discards)",
    "recoveries": "recoveries",
    "recovery_failures": "recoveries failed",
    "degraded": "degraded leases",
}
_ORDER = list(_LEGEND)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def window_waits(samples: list[Sample], name: str) -> list[tuple[float, float, float]]:
    """``(t_s, p50_s, max_s)`` of the waits of ``name``'s acquisitions that ended in each
    window; windows where none ended are left out."""
    points = []
    for s in samples:
        waits = s.waits.get(name, [])
        zeros = s.zero_waits.get(name, 0)
        if not waits and zeros <= 0:
            continue
        (p50,) = wait_percentiles(waits, len(waits), zeros, 50)
        points.append((s.t_s, p50, max(waits, default=0.0)))
    return points


def size_changes(samples: list[Sample]) -> tuple[list[str], dict[str, int]]:
    """Services whose pool size changed during the run, and the constant size of the others."""
    names = list(samples[-1].size) if samples else []
    changed = [n for n in names if len({s.size.get(n, 0) for s in samples}) > 1]
    constant = {n: samples[-1].size[n] for n in names if n not in changed}
    return changed, constant


def plot_timeline(timeline: Timeline, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    samples = timeline.samples
    t = [s.t_s for s in samples]
    services = list(samples[-1].size) if samples else []
    style: dict[str, dict[str, Any]] = {
        name: {"color": f"C{i % 10}", "marker": _MARKERS[i % len(_MARKERS)]}
        for i, name in enumerate(services)
    }
    changed, constant = size_changes(samples)
    last = samples[-1] if samples else None
    eventful = last is not None and any(
        any(counts.values())
        for counts in (last.faults, last.recoveries, last.recovery_failures, last.degraded)
    )
    ratios = [2, 3, 3] + ([2] if changed else []) + [3 if eventful else 2]
    fig, axes = plt.subplots(
        len(ratios), 1, figsize=(11, 2.6 * len(ratios)), sharex=True, height_ratios=ratios
    )
    ax_load, ax_waiters, ax_wait = axes[:3]
    ax_events = axes[-1]

    running = [s.running for s in samples]
    waiting = [sum(s.waiting.values()) for s in samples]
    ax_load.fill_between(t, waiting, step=None, alpha=0.35, label="waiting for an instance")
    ax_load.plot(t, running, color="black", linewidth=1.2, label="tests running")
    ax_load.set_ylabel("tests")
    ax_load.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_load.legend(loc="upper right")

    for name in services:
        ax_waiters.plot(
            t,
            [s.waiting.get(name, 0) for s in samples],
            label=name,
            markersize=4,
            markevery=_every(t),
            **style[name],
        )
    ax_waiters.set_ylabel("waiters")
    ax_waiters.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_waiters.legend(loc="upper right", fontsize="small", ncol=4)

    for name in services:
        points = window_waits(samples, name)
        if points:
            ax_wait.plot(
                [p[0] for p in points],
                [1e3 * p[1] for p in points],
                label=name,
                markersize=4,
                markevery=_every(points),
                **style[name],
            )
    ax_wait.set_ylabel("wait p50 (ms)")
    ax_wait.set_title(
        "median wait of the acquisitions that ended in each window (hits count 0)",
        fontsize="small",
        loc="left",
    )

    if changed:
        _plot_sizes(axes[3], samples, changed, style)
    _plot_events(ax_events, samples, services, style, constant)
    ax_events.set_xlabel("seconds since the pool started")

    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _every(points: list[float] | list[tuple[float, float, float]]) -> int:
    """Mark about 25 points of a line: enough to tell lines apart, few enough to read them."""
    return max(1, len(points) // 25)


def _plot_sizes(
    ax: Axes, samples: list[Sample], changed: list[str], style: dict[str, dict[str, Any]]
) -> None:
    from matplotlib.ticker import MaxNLocator

    t = [s.t_s for s in samples]
    # Lines of equal sizes would hide each other: each is nudged by a fraction of an instance.
    for i, name in enumerate(changed):
        nudge = (i - (len(changed) - 1) / 2) * 0.06
        ax.step(
            t,
            [s.size.get(name, 0) + nudge for s in samples],
            where="post",
            label=name,
            markevery=_every(t),
            markersize=4,
            **style[name],
        )
    ax.set_ylabel("pool size")
    ax.set_title("services whose size changed (others: see the lanes below)", fontsize="small", loc="left")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize="small", ncol=4, frameon=False)


def _plot_events(
    ax: Axes,
    samples: list[Sample],
    services: list[str],
    style: dict[str, dict[str, Any]],
    constant: dict[str, int],
) -> None:
    """One lane per service (labelled with its size when constant); in it, per window:
    faults above, recoveries (or failed ones) on, degraded leases below."""
    kinds = (
        ("faults", "x", "tab:red", 0.25),
        ("recoveries", "o", "tab:green", 0.0),
        ("recovery_failures", "s", "black", 0.0),
        ("degraded", "v", "tab:orange", -0.25),
    )
    labelled: set[str] = set()
    handles: dict[str, Any] = {}
    for lane, name in enumerate(reversed(services)):
        for kind, marker, color, offset in kinds:
            xs, ys, sizes = [], [], []
            previous = 0
            for s in samples:
                value = getattr(s, kind).get(name, 0)
                if value > previous:
                    xs.append(s.t_s)
                    ys.append(lane + offset)
                    sizes.append(10 + 10 * math.sqrt(value - previous))
                previous = value
            if xs:
                handles[kind] = ax.scatter(
                    xs,
                    ys,
                    s=sizes,
                    marker=marker,
                    color=color,
                    alpha=0.8,
                    linewidths=1,
                )
                labelled.add(kind)
    labels = [f"{n} ({constant[n]})" if n in constant else n for n in reversed(services)]
    ax.set_yticks(range(len(services)), labels)
    for tick, name in zip(ax.get_yticklabels(), reversed(services), strict=True):
        tick.set_color(style[name]["color"])
    ax.set_ylim(-0.6, len(services) - 0.4)
    ax.set_ylabel("service (pool size)")
    ax.set_title("events per window (marker area: count)", fontsize="small", loc="left")
    if labelled:
        ax.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            fontsize="small",
            ncol=4,
            frameon=False,
            labels=[_LEGEND[k] for k in sorted(labelled, key=_ORDER.index)],
            handles=[h for k in sorted(labelled, key=_ORDER.index) for h in [handles[k]]],
        )
    else:
        ax.text(0.5, 0.5, "no faults, recoveries or degraded leases", transform=ax.transAxes, ha="center")
    ax.grid(axis="y", alpha=0.3)
