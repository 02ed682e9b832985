"""Usage history: what earlier runs needed, so the pool can warm and scale ahead of demand.

Three objects, in the order a run meets them:

* :class:`UsageRecorder` - mutable, owned by the pool for one run. Its ``record_*`` methods are
  O(1) and allocate nothing in the steady state; times are seconds from the run start, read
  from the pool's clock. Acquisition times are not kept: they are counted per window of
  ``window_s`` as they arrive (the recorder doubles its window when a run outgrows
  ``max_windows``, so memory stays bounded).
* :class:`RunRecord` - the frozen result of :meth:`UsageRecorder.finish`: per service a
  :class:`ServiceUsage`, per named test the services it used. :meth:`RunRecord.combine` adds
  up the records of workers that ran *at the same time* (pytest-xdist).
* :class:`History` - immutable, merged across runs with exponential decay (a run ``k`` runs
  old weighs ``decay ** k``), bounded by :class:`Limits`, saved as JSON with an atomic write.
  Loading never crashes: a missing file is an empty history, and a corrupt, foreign-version or
  unreadable one is an empty history plus a :class:`MockPoolHistoryWarning`. Only ``json`` is
  used, and every field is type-checked before use.

How the pool uses it::

    history = History.load(path)                          # at start
    for name in pool.services:                            # warm (dependencies included)
        want = math.ceil(history.size(name))              # the size it settled at
    recorder = UsageRecorder(window_s=1.0)
    recorder.record_acquire(name, now - t0, in_use)       # on every acquire, after counting it
    recorder.record_release(name, hold_s)                 # on every release
    recorder.record_test(test_id, services)               # plugin, at the end of each test
    history.merge(recorder.finish(duration_s=now - t0, sizes=sizes)).save(path)  # at close

The pytest plugin stores ``history.to_dict()`` in pytest's cache and reads it back with
:meth:`History.from_cache`; xdist workers send ``recorder.finish().to_dict()``, and the
controller merges ``RunRecord.combine([RunRecord.from_dict(d) for d in outputs])``.

JSON format (``version`` 1; times in seconds, demand in acquisitions per window)::

    {"format": "mockpool-history", "version": 1, "window_s": 1.0, "runs": 3,
     "services": {"redis": {"weight": 1.75, "last_run": 3, "acquisitions": 120.0,
                            "peak": 12.0, "hold_mean_s": 0.01, "hold_p95_s": 0.03,
                            "demand": [4.0, 9.5, ...]}},
     "tests": {"tests/test_a.py::test_x": {"services": ["redis"], "last_run": 3}}}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # numpy (about 40 ms to import) loads when first used, not with mockpool: ``import
    # mockpool`` stays cheap for suites that never summarise demand.
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = (
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

FORMAT = "mockpool-history"
RUN_FORMAT = "mockpool-run"
VERSION = 1

# A history file larger than this is not ours (the default limits keep files near 10 MB).
_MAX_FILE_BYTES = 64 * 1024 * 1024
# Times beyond this (about 30 years) are garbage; counting them would allocate without bound.
_MAX_T_REL = 1e9
# Stored demand is rounded: sub-micro-acquisition precision is noise and triples the file size.
_DEMAND_DECIMALS = 6


class MockPoolHistoryWarning(UserWarning):
    """A history file or value could not be used and was ignored."""


class HistoryFormatError(ValueError):
    """A history or run document does not match the schema; the message names the field."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a :class:`History`, applied on every merge."""

    #: Demand windows kept per service; longer series are re-binned to a coarser window.
    max_windows: int = 3600
    #: Services kept, most recently used first.
    max_services: int = 256
    #: Tests kept, most recently seen first.
    max_tests: int = 10_000
    #: Services recorded per test.
    max_services_per_test: int = 64
    #: A service or test not seen for more runs than this is forgotten.
    max_idle_runs: int = 20

    def __post_init__(self) -> None:
        for name in ("max_windows", "max_services", "max_tests", "max_services_per_test", "max_idle_runs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True, slots=True)
class ServiceUsage:
    """One service in one run."""

    acquisitions: int
    peak_concurrency: int
    hold_mean_s: float
    hold_p95_s: float
    #: Acquisitions per window of the run's ``window_s``, from the run start.
    demand: tuple[float, ...]
    #: The most instances alive at once: the size the sizing controller settled at.
    size: int = 0


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What one run (or several parallel workers, combined) used."""

    window_s: float
    duration_s: float
    services: Mapping[str, ServiceUsage] = field(default_factory=lambda: MappingProxyType({}))
    #: Test id -> the services it used, sorted.
    tests: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _check_window(self.window_s)
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        object.__setattr__(self, "tests", MappingProxyType(dict(self.tests)))

    @staticmethod
    def combine(runs: Iterable[RunRecord]) -> RunRecord:
        """Add up runs that happened at the same time (xdist workers) into one.

        Demand and acquisitions are summed on the coarsest window; peaks are summed too, an
        upper bound since the workers' peaks need not coincide; hold means are weighted by
        acquisitions, the p95 is the worst worker's. Tests are united (a later run wins a tie).
        """
        import numpy as np

        runs = list(runs)
        if not runs:
            raise ValueError("RunRecord.combine needs at least one run")
        window = max(r.window_s for r in runs)
        services: dict[str, ServiceUsage] = {}
        for name in sorted({n for r in runs for n in r.services}):
            parts = [(r, r.services[name]) for r in runs if name in r.services]
            demand = _sum_series([_rebin(np.asarray(u.demand), r.window_s, window) for r, u in parts])
            acquisitions = sum(u.acquisitions for _, u in parts)
            hold_mean = (
                sum(u.hold_mean_s * u.acquisitions for _, u in parts) / acquisitions if acquisitions else 0.0
            )
            services[name] = ServiceUsage(
                acquisitions=acquisitions,
                peak_concurrency=sum(u.peak_concurrency for _, u in parts),
                hold_mean_s=hold_mean,
                hold_p95_s=max(u.hold_p95_s for _, u in parts),
                demand=_to_tuple(demand),
                # Each worker has a pool of its own: the size one settled at (the largest).
                size=max(u.size for _, u in parts),
            )
        tests: dict[str, tuple[str, ...]] = {}
        for r in runs:
            tests.update(r.tests)
        return RunRecord(window, max(r.duration_s for r in runs), services, tests)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (pytest-xdist's ``workeroutput`` carries it to the controller)."""
        return {
            "format": RUN_FORMAT,
            "version": VERSION,
            "window_s": self.window_s,
            "duration_s": self.duration_s,
            "services": {
                name: {
                    "acquisitions": u.acquisitions,
                    "peak_concurrency": u.peak_concurrency,
                    "hold_mean_s": u.hold_mean_s,
                    "hold_p95_s": u.hold_p95_s,
                    "demand": list(u.demand),
                    "size": u.size,
                }
                for name, u in self.services.items()
            },
            "tests": {test: list(used) for test, used in self.tests.items()},
        }

    @staticmethod
    def from_dict(data: object) -> RunRecord:
        """Parse :meth:`to_dict`'s output; :class:`HistoryFormatError` naming the bad field otherwise."""
        root = _header(data, RUN_FORMAT, "run")
        services = {
            name: ServiceUsage(
                acquisitions=_int(s, "acquisitions", f"run.services[{name!r}]"),
                peak_concurrency=_int(s, "peak_concurrency", f"run.services[{name!r}]"),
                hold_mean_s=_num(s, "hold_mean_s", f"run.services[{name!r}]"),
                hold_p95_s=_num(s, "hold_p95_s", f"run.services[{name!r}]"),
                demand=_demand(s, f"run.services[{name!r}]"),
                size=_int(s, "size", f"run.services[{name!r}]") if "size" in s else 0,
            )
            for name, s in _objects(root, "services", "run").items()
        }
        tests = {
            test: _names(t, f"run.tests[{test!r}]") for test, t in _mapping(root, "tests", "run").items()
        }
        return RunRecord(_window(root, "run"), _num(root, "duration_s", "run"), services, tests)


class _Tally:
    """Running counts of one service during a run."""

    __slots__ = ("acquisitions", "counts", "hold_i", "hold_n", "hold_ring", "hold_sum", "peak")

    def __init__(self, hold_samples: int) -> None:
        self.acquisitions = 0
        self.peak = 0
        self.counts: list[int] = []
        self.hold_sum = 0.0
        self.hold_n = 0
        # A ring of recent hold times: the p95 is of the last ``hold_samples`` releases.
        self.hold_ring = [0.0] * hold_samples
        self.hold_i = 0


class UsageRecorder:
    """Records one run's usage. Not thread-safe: call it from the pool's event loop."""

    __slots__ = ("_hold_samples", "_max_tests", "_max_windows", "_tallies", "_tests", "_window")

    def __init__(
        self,
        *,
        window_s: float = 1.0,
        max_windows: int = DEFAULT_LIMITS.max_windows,
        max_tests: int = DEFAULT_LIMITS.max_tests,
        hold_samples: int = 1024,
    ) -> None:
        _check_window(window_s)
        if max_windows < 2 or max_tests < 0 or hold_samples < 1:
            raise ValueError("max_windows must be >= 2, max_tests >= 0 and hold_samples >= 1")
        self._window = float(window_s)
        self._max_windows = max_windows
        self._max_tests = max_tests
        self._hold_samples = hold_samples
        self._tallies: dict[str, _Tally] = {}
        self._tests: dict[str, tuple[str, ...]] = {}

    @property
    def window_s(self) -> float:
        """The current window; it doubles each time the run outgrows ``max_windows``."""
        return self._window

    def _tally(self, service: str) -> _Tally:
        tally = self._tallies.get(service)
        if tally is None:
            tally = self._tallies[service] = _Tally(self._hold_samples)
        return tally

    def record_acquire(self, service: str, t_rel: float, in_use: int) -> None:
        """Count an acquisition at ``t_rel`` seconds from the run start, ``in_use`` included."""
        tally = self._tally(service)
        tally.acquisitions += 1
        tally.peak = max(tally.peak, in_use)
        if not 0.0 <= t_rel < _MAX_T_REL:  # also false for NaN
            t_rel = 0.0
        i = int(t_rel / self._window)
        if i >= self._max_windows:
            while i >= self._max_windows:
                self._coarsen()
                i = int(t_rel / self._window)
        counts = tally.counts
        if i >= len(counts):
            counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += 1

    def record_window(self, service: str, t_rel: float, count: int, peak: int) -> None:
        """Count ``count`` acquisitions at ``t_rel`` at once, with the peak concurrency seen
        meanwhile: how the pool feeds the recorder from sampled counters, at no cost per
        acquire."""
        tally = self._tally(service)
        tally.peak = max(tally.peak, peak)
        if count <= 0:
            return
        tally.acquisitions += count
        if not 0.0 <= t_rel < _MAX_T_REL:  # also false for NaN
            t_rel = 0.0
        i = int(t_rel / self._window)
        while i >= self._max_windows:
            self._coarsen()
            i = int(t_rel / self._window)
        counts = tally.counts
        if i >= len(counts):
            counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += count

    def _coarsen(self) -> None:
        # Double the window for every service at once, so all share one time grid.
        for tally in self._tallies.values():
            c = tally.counts
            tally.counts = [sum(c[j : j + 2]) for j in range(0, len(c), 2)]
        self._window *= 2

    def record_release(self, service: str, hold_s: float) -> None:
        """Record how long a lease of ``service`` was held."""
        if not 0.0 <= hold_s < _MAX_T_REL:
            return
        tally = self._tally(service)
        tally.hold_sum += hold_s
        tally.hold_n += 1
        ring = tally.hold_ring
        ring[tally.hold_i] = hold_s
        tally.hold_i = (tally.hold_i + 1) % len(ring)

    def record_test(self, test_id: str, services: Iterable[str]) -> None:
        """Remember the services ``test_id`` used (the last call for a test wins)."""
        if test_id in self._tests or len(self._tests) < self._max_tests:
            self._tests[test_id] = tuple(sorted(set(services)))

    def demand(self, service: str, *, t_rel: float | None = None) -> FloatArray:
        """This run's demand so far, per window of :attr:`window_s`.

        With ``t_rel`` (now, from the run start) only the windows complete by then, padded with
        zeros for idle ones: a reader must not see a half-counted window, nor miss a silence.
        """
        import numpy as np

        tally = self._tallies.get(service)
        counts = np.asarray(tally.counts if tally else [], dtype=np.float64)
        if t_rel is None:
            return counts
        complete = int(min(max(t_rel, 0.0), _MAX_T_REL) / self._window) if not math.isnan(t_rel) else 0
        complete = min(complete, self._max_windows)
        out = np.zeros(complete, dtype=np.float64)
        m = min(complete, counts.size)
        out[:m] = counts[:m]
        return out

    def finish(self, *, duration_s: float | None = None, sizes: Mapping[str, int] | None = None) -> RunRecord:
        """Summarise the run. ``duration_s`` pads the demand with the run's idle tail; ``sizes``
        are the most instances each service had alive at once."""
        import numpy as np

        windows = max((len(t.counts) for t in self._tallies.values()), default=0)
        if duration_s is not None and 0.0 <= duration_s < _MAX_T_REL:
            windows = max(windows, math.ceil(duration_s / self._window))
        windows = min(windows, self._max_windows)
        services: dict[str, ServiceUsage] = {}
        for name, t in self._tallies.items():
            demand = np.zeros(windows, dtype=np.float64)
            counts = t.counts[:windows]
            demand[: len(counts)] = counts
            holds = t.hold_ring[: t.hold_n] if t.hold_n < len(t.hold_ring) else t.hold_ring
            services[name] = ServiceUsage(
                acquisitions=t.acquisitions,
                peak_concurrency=t.peak,
                hold_mean_s=t.hold_sum / t.hold_n if t.hold_n else 0.0,
                hold_p95_s=float(np.percentile(holds, 95)) if holds else 0.0,
                demand=_to_tuple(demand),
                size=(sizes or {}).get(name, 0),
            )
        valid = duration_s is not None and 0.0 <= duration_s < _MAX_T_REL
        duration = duration_s if duration_s is not None and valid else windows * self._window
        return RunRecord(self._window, duration, services, self._tests)


# --------------------------------------------------------------------------- across runs


@dataclass(frozen=True, slots=True)
class ServiceHistory:
    """One service across runs. Means are decayed means over the runs that used it."""

    #: Sum of ``decay ** age`` over the runs that used the service: how much evidence there is.
    weight: float
    #: The value of :attr:`History.runs` when the service was last used.
    last_run: int
    acquisitions: float
    #: Decayed maximum of per-run peak concurrency: ``max(peak_k * decay ** age_k)``.
    peak: float
    hold_mean_s: float
    hold_p95_s: float
    #: Decayed mean acquisitions per window of :attr:`History.window_s`, from the run start.
    demand: tuple[float, ...]
    #: Decayed maximum of the size each run settled at: what the next run starts with.
    size: float = 0.0


@dataclass(frozen=True, slots=True)
class TestHistory:
    """The services a test used when it last ran."""

    __test__ = False  # not a pytest test class, whatever its name

    services: tuple[str, ...]
    last_run: int


@dataclass(frozen=True, slots=True)
class History:
    """Usage merged across runs. Immutable: :meth:`merge` returns a new history."""

    window_s: float = 1.0
    #: Runs merged so far.
    runs: int = 0
    services: Mapping[str, ServiceHistory] = field(default_factory=lambda: MappingProxyType({}))
    tests: Mapping[str, TestHistory] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _check_window(self.window_s)
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        object.__setattr__(self, "tests", MappingProxyType(dict(self.tests)))

    # ----------------------------------------------------------------- queries

    def peak(self, service: str) -> float:
        """Decayed peak concurrency of ``service`` (0 if unknown)."""
        s = self.services.get(service)
        return s.peak if s else 0.0

    def size(self, service: str) -> float:
        """Decayed size ``service`` settled at in earlier runs (0 if unknown): how many to warm."""
        s = self.services.get(service)
        return s.size if s else 0.0

    def demand_series(self, service: str) -> FloatArray:
        """Decayed mean demand per window of :attr:`window_s` (empty if unknown); a copy."""
        import numpy as np

        s = self.services.get(service)
        return np.array(s.demand if s else (), dtype=np.float64)

    def services_for_test(self, test_id: str) -> tuple[str, ...]:
        """The services ``test_id`` used when it last ran, sorted; ``()`` if unknown."""
        t = self.tests.get(test_id)
        return t.services if t else ()

    # ----------------------------------------------------------------- merging

    def merge(self, run: RunRecord, *, decay: float = 0.5, limits: Limits = DEFAULT_LIMITS) -> History:
        """Fold ``run`` in as the newest run; older runs' weight is multiplied by ``decay``.

        ``decay`` in ``[0, 1]``: 0 forgets everything before ``run``, 1 averages all runs
        equally. Services absent from ``run`` keep their means, but their weight and peak decay
        and they are dropped after ``limits.max_idle_runs`` runs unused.
        """
        import numpy as np

        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay!r}")
        runs = self.runs + 1
        window = run.window_s if not self.services else max(self.window_s, run.window_s)
        longest = max(
            [len(s.demand) * self.window_s for s in self.services.values()]
            + [len(u.demand) * run.window_s for u in run.services.values()],
            default=0.0,
        )
        while longest / window > limits.max_windows * (1 + 1e-9):
            window *= 2

        services: dict[str, ServiceHistory] = {}
        for name in self.services.keys() | run.services.keys():
            old = self.services.get(name)
            new = run.services.get(name)
            old_demand = _rebin(np.asarray(old.demand), self.window_s, window) if old else None
            if new is None:
                assert old is not None and old_demand is not None
                if runs - old.last_run > limits.max_idle_runs:
                    continue
                services[name] = replace(
                    old,
                    weight=old.weight * decay,
                    peak=old.peak * decay,
                    size=old.size * decay,
                    demand=_to_tuple(old_demand),
                )
                continue
            new_demand = _rebin(np.asarray(new.demand), run.window_s, window)
            if old is None or old_demand is None:
                services[name] = ServiceHistory(
                    weight=1.0,
                    last_run=runs,
                    acquisitions=float(new.acquisitions),
                    peak=float(new.peak_concurrency),
                    hold_mean_s=new.hold_mean_s,
                    hold_p95_s=new.hold_p95_s,
                    demand=_to_tuple(new_demand),
                    size=float(new.size),
                )
                continue
            # Normalised exponential decay: a mean weighted by decay ** age, so the first run
            # counts fully and, in the steady state, the newest run weighs (1 - decay).
            w_old = old.weight * decay
            share = 1.0 / (w_old + 1.0)
            services[name] = ServiceHistory(
                weight=w_old + 1.0,
                last_run=runs,
                acquisitions=_blend(old.acquisitions, new.acquisitions, share),
                peak=max(float(new.peak_concurrency), old.peak * decay),
                hold_mean_s=_blend(old.hold_mean_s, new.hold_mean_s, share),
                hold_p95_s=_blend(old.hold_p95_s, new.hold_p95_s, share),
                demand=_to_tuple(_blend_series(old_demand, new_demand, share)),
                size=max(float(new.size), old.size * decay),
            )
        kept = sorted(services.items(), key=lambda kv: (-kv[1].last_run, -kv[1].weight, kv[0]))
        kept = kept[: limits.max_services]

        tests = {t: h for t, h in self.tests.items() if runs - h.last_run <= limits.max_idle_runs}
        for test_id, used in run.tests.items():
            tests[test_id] = TestHistory(tuple(sorted(set(used)))[: limits.max_services_per_test], runs)
        kept_tests = sorted(tests.items(), key=lambda kv: (-kv[1].last_run, kv[0]))[: limits.max_tests]
        return History(window, runs, dict(sorted(kept)), dict(sorted(kept_tests)))

    # ----------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see the module docstring); what pytest's cache stores."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "window_s": self.window_s,
            "runs": self.runs,
            "services": {
                name: {
                    "weight": s.weight,
                    "last_run": s.last_run,
                    "acquisitions": s.acquisitions,
                    "peak": s.peak,
                    "hold_mean_s": s.hold_mean_s,
                    "hold_p95_s": s.hold_p95_s,
                    "demand": list(s.demand),
                    "size": s.size,
                }
                for name, s in self.services.items()
            },
            "tests": {
                test: {"services": list(t.services), "last_run": t.last_run} for test, t in self.tests.items()
            },
        }

    @staticmethod
    def from_dict(data: object) -> History:
        """Parse and validate :meth:`to_dict`'s output; :class:`HistoryFormatError` otherwise."""
        root = _header(data, FORMAT, "history")
        services = {}
        for name, s in _objects(root, "services", "history").items():
            where = f"history.services[{name!r}]"
            services[name] = ServiceHistory(
                weight=_num(s, "weight", where),
                last_run=_int(s, "last_run", where),
                acquisitions=_num(s, "acquisitions", where),
                peak=_num(s, "peak", where),
                hold_mean_s=_num(s, "hold_mean_s", where),
                hold_p95_s=_num(s, "hold_p95_s", where),
                demand=_demand(s, where),
                # Added within version 1: a file without it warms nothing from history.
                size=_num(s, "size", where) if "size" in s else 0.0,
            )
        tests = {}
        for test, t in _objects(root, "tests", "history").items():
            where = f"history.tests[{test!r}]"
            tests[test] = TestHistory(
                _names(t.get("services"), f"{where}.services"), _int(t, "last_run", where)
            )
        runs = _int(root, "runs", "history")
        last_runs = [(n, s.last_run) for n, s in services.items()] + [
            (n, t.last_run) for n, t in tests.items()
        ]
        for name, last_run in last_runs:
            if last_run > runs:
                raise HistoryFormatError(
                    f"history: {name!r} last ran in run {last_run}, after the last ({runs})"
                )
        return History(_window(root, "history"), runs, services, tests)

    @staticmethod
    def from_cache(value: object, *, source: str = "pytest cache") -> History:
        """Like :meth:`from_dict`, for a value that may be missing or stale: never raises.

        ``None`` (nothing cached) gives an empty history; an invalid value gives an empty
        history and a :class:`MockPoolHistoryWarning` naming ``source``.
        """
        if value is None:
            return History()
        try:
            return History.from_dict(value)
        except HistoryFormatError as exc:
            warnings.warn(
                f"mockpool: ignoring history from {source}: {exc}", MockPoolHistoryWarning, stacklevel=2
            )
            return History()

    @staticmethod
    def load(path: str | os.PathLike[str]) -> History:
        """Read a history file. Missing: empty history. Unusable: empty history and a warning."""
        p = Path(path)
        try:
            return History._read(p)
        except FileNotFoundError:
            return History()
        except (OSError, ValueError, RecursionError) as exc:  # JSON and Unicode errors are ValueErrors
            warnings.warn(
                f"mockpool: ignoring history file {str(p)!r}: {type(exc).__name__}: {exc}",
                MockPoolHistoryWarning,
                stacklevel=2,
            )
            return History()

    @staticmethod
    def open(path: str | os.PathLike[str]) -> tuple[History, Path]:
        """Load the history at ``path`` for a run, and say where the run should save it.

        That is ``path`` itself, unless it holds something this version cannot read (a newer
        version's history, another tool's JSON, a damaged file): that file is never
        overwritten. A warning says so, and the run reads and writes the file beside it,
        ``<stem>.mockpool-v<VERSION><suffix>``.
        """
        p = Path(path)
        try:
            return History._read(p), p
        except FileNotFoundError:
            return History(), p
        except (OSError, ValueError, RecursionError) as exc:
            beside = p.with_name(f"{p.stem}.mockpool-v{VERSION}{p.suffix}")
            warnings.warn(
                f"mockpool: cannot use history file {str(p)!r} ({type(exc).__name__}: {exc}); it is "
                f"left as it is, and this run's history is kept beside it in {str(beside)!r}",
                MockPoolHistoryWarning,
                stacklevel=2,
            )
            return History.load(beside), beside

    @staticmethod
    def _read(p: Path) -> History:
        with p.open("rb") as f:
            raw = f.read(_MAX_FILE_BYTES + 1)
        if len(raw) > _MAX_FILE_BYTES:
            raise ValueError(f"larger than {_MAX_FILE_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        return History.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temp file in the same directory, fsync, then ``os.replace``.

        A crash at any point leaves either the old file or the new one, never a torn file.
        Raises ``OSError`` on failure (the pool catches it and warns).
        """
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # Persist the rename itself; best effort, some platforms cannot open a directory.
        with contextlib.suppress(OSError):
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


# --------------------------------------------------------------------------- helpers


def _check_window(window_s: object) -> None:
    if isinstance(window_s, bool) or not isinstance(window_s, int | float):
        raise TypeError(f"window_s must be a number, got {window_s!r}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be positive and finite, got {window_s!r}")


def _to_tuple(a: FloatArray) -> tuple[float, ...]:
    import numpy as np

    return tuple(np.round(a, _DEMAND_DECIMALS).tolist())


def _blend(old: float, new: float, share: float) -> float:
    return old + (new - old) * share


def _blend_series(old: FloatArray, new: FloatArray, share: float) -> FloatArray:
    import numpy as np

    # A run shorter than the history had no demand past its end: pad it with zeros.
    n = max(old.size, new.size)
    a = np.zeros(n)
    b = np.zeros(n)
    a[: old.size] = old
    b[: new.size] = new
    return a + (b - a) * share


def _sum_series(series: list[FloatArray]) -> FloatArray:
    import numpy as np

    total = np.zeros(max((s.size for s in series), default=0))
    for s in series:
        total[: s.size] += s
    return total


def _rebin(counts: FloatArray, from_w: float, to_w: float) -> FloatArray:
    """Re-bin counts per ``from_w`` window to ``to_w``, preserving totals (linear within bins)."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.float64)
    if from_w == to_w or counts.size == 0:
        return counts
    span = counts.size * from_w
    m = max(math.ceil(span / to_w - 1e-9), 1)
    edges = np.arange(counts.size + 1, dtype=np.float64) * from_w
    cum = np.concatenate(([0.0], np.cumsum(counts)))
    return np.diff(np.interp(np.arange(m + 1, dtype=np.float64) * to_w, edges, cum))


def _reject_constant(name: str) -> Any:
    raise HistoryFormatError(f"non-finite number {name} in JSON")


def _header(data: object, fmt: str, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise HistoryFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != fmt:
        raise HistoryFormatError(f"{where}: format is {data.get('format')!r}, expected {fmt!r}")
    if data.get("version") != VERSION or isinstance(data.get("version"), bool):
        raise HistoryFormatError(f"{where}: unsupported version {data.get('version')!r}, expected {VERSION}")
    return data


def _mapping(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise HistoryFormatError(f"{where}.{key}: expected an object, got {type(value).__name__}")
    for name in value:
        if not isinstance(name, str):
            raise HistoryFormatError(f"{where}.{key}: expected string keys, got {name!r}")
    return value


def _objects(obj: Mapping[str, Any], key: str, where: str) -> dict[str, dict[str, Any]]:
    value = _mapping(obj, key, where)
    for name, item in value.items():
        if not isinstance(item, dict):
            raise HistoryFormatError(
                f"{where}.{key}[{name!r}]: expected an object, got {type(item).__name__}"
            )
    return value


def _finite(value: object) -> float | None:
    """``value`` as a finite non-negative float, or ``None`` (bools and huge ints are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if 0.0 <= f < math.inf else None


def _num(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = _finite(obj.get(key))
    if value is None:
        raise HistoryFormatError(f"{where}.{key}: expected a non-negative number, got {obj.get(key)!r}")
    return value


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HistoryFormatError(f"{where}.{key}: expected a non-negative integer, got {value!r}")
    return value


def _window(obj: Mapping[str, Any], where: str) -> float:
    value = _num(obj, "window_s", where)
    if value <= 0:
        raise HistoryFormatError(f"{where}.window_s: expected a positive number, got {value!r}")
    return value


def _demand(obj: Mapping[str, Any], where: str) -> tuple[float, ...]:
    value = obj.get("demand")
    numbers = [_finite(x) for x in value] if isinstance(value, list) else [None]
    if any(x is None for x in numbers):
        raise HistoryFormatError(f"{where}.demand: expected a list of non-negative numbers")
    return tuple(x for x in numbers if x is not None)


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise HistoryFormatError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)
