"""``--plot PATH``: the run over time as a PNG (matplotlib, Agg backend, imported only here).

Four panels sharing the time axis: concurrency (tests running, leases held), pool size per
service, waiters per service, and the hit rate (per sampling window and cumulative).
"""

from __future__ import annotations

from pathlib import Path

from .timeline import Timeline

__all__ = ("plot_timeline",)


def plot_timeline(timeline: Timeline, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = timeline.samples
    t = [s.t_s for s in samples]
    services = list(samples[-1].size) if samples else []
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    ax_conc, ax_size, ax_wait, ax_hit = axes

    ax_conc.plot(t, [s.running for s in samples], label="tests running")
    ax_conc.plot(t, [s.in_use for s in samples], label="leases held by tests")
    ax_conc.set_ylabel("concurrency")
    ax_conc.legend(loc="upper right")

    for name in services:
        ax_size.plot(t, [s.size.get(name, 0) for s in samples], label=name)
    ax_size.set_ylabel("pool size")
    ax_size.legend(loc="upper left", fontsize="small", ncol=2)

    for name in services:
        ax_wait.plot(t, [s.waiting.get(name, 0) for s in samples], label=name)
    ax_wait.set_ylabel("waiters")
    ax_wait.legend(loc="upper right", fontsize="small", ncol=2)

    window: list[float] = []
    cumulative: list[float] = []
    prev_hits = prev_served = 0
    for s in samples:
        served = s.served - prev_served
        window.append(100 * (s.hits - prev_hits) / served if served else float("nan"))
        cumulative.append(100 * s.hits / s.served if s.served else float("nan"))
        prev_hits, prev_served = s.hits, s.served
    ax_hit.plot(t, window, ".", label="per window")
    ax_hit.plot(t, cumulative, label="cumulative")
    ax_hit.set_ylabel("hit rate %")
    ax_hit.set_ylim(0, 105)
    ax_hit.set_xlabel("seconds")
    ax_hit.legend(loc="lower right")

    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
