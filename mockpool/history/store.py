"""The store: :class:`History`, usage merged across runs, and the file that keeps it.

A history is immutable, merged across runs with exponential decay (a run ``k`` runs old weighs
``decay ** k``), bounded by :class:`Limits`, saved as JSON with an atomic write. Loading never
crashes: a missing file is an empty history, and a corrupt, foreign-version or unreadable one is
an empty history plus a :class:`MockPoolHistoryWarning`. :meth:`History.open` also never
overwrites a file it cannot read: the run keeps its history in the file beside it.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .format import (
    DEFAULT_LIMITS,
    VERSION,
    HistoryFormatError,
    Limits,
    MockPoolHistoryWarning,
    ServiceHistory,
    TestHistory,
    decode,
    encode,
    read_history,
    write_history,
)
from .recorder import RunRecord, _check_window, _rebin, _to_tuple

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = ("History",)

# A history file larger than this is not ours (the default limits keep files near 10 MB).
_MAX_FILE_BYTES = 64 * 1024 * 1024


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

    def settled(self, service: str) -> int:
        """:meth:`size` as a count of instances: rounded up, 0 without any run."""
        return math.ceil(self.size(service) - 1e-9) if self.runs else 0

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
        """The JSON document (:mod:`mockpool.history.format`); what pytest's cache stores."""
        return write_history(self.window_s, self.runs, self.services, self.tests)

    @staticmethod
    def from_dict(data: object) -> History:
        """Parse and validate :meth:`to_dict`'s output, or an older version's (migrated);
        :class:`HistoryFormatError` otherwise."""
        return History(*read_history(data))

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
    def open(path: str | os.PathLike[str]) -> tuple[History, Path | None]:
        """Load the history at ``path`` for a run, and say where the run should save it.

        That is ``path`` itself, unless it holds something this version cannot read (a newer
        version's history, another tool's JSON, a damaged file): that file is never
        overwritten. A warning says so, and the run reads and writes the file beside it,
        ``<stem>.mockpool-v<VERSION><suffix>``. A path that no file can be at (one of its
        parents is a file) gets one warning, and the run keeps no history (None).
        """
        p = Path(path)
        try:
            return History._read(p), p
        except FileNotFoundError:
            return History(), p
        except NotADirectoryError as exc:
            # Beside it is no better: the same parent. Said once, here, rather than again as
            # the file beside it fails to load and once more as the run fails to save it.
            warnings.warn(
                f"mockpool: cannot use history file {str(p)!r} ({type(exc).__name__}: {exc}): "
                "a parent of it is a file; this run neither reads nor saves history. Pass a "
                "path in a directory",
                MockPoolHistoryWarning,
                stacklevel=2,
            )
            return History(), None
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
    def read_quietly(path: str | os.PathLike[str]) -> History | None:
        """The history at ``path``, or None when there is none or it cannot be used: no
        warning (the pool reads the file again as it saves, and warned when it first read)."""
        try:
            return History._read(Path(path))
        except (OSError, ValueError, RecursionError):
            return None

    @staticmethod
    def _read(p: Path) -> History:
        with p.open("rb") as f:
            raw = f.read(_MAX_FILE_BYTES + 1)
        if len(raw) > _MAX_FILE_BYTES:
            raise ValueError(f"larger than {_MAX_FILE_BYTES} bytes")
        return History.from_dict(decode(raw))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temp file in the same directory, fsync, then ``os.replace``.

        A crash at any point leaves either the old file or the new one, never a torn file.
        Raises ``OSError`` on failure (the pool catches it and warns).
        """
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        text = encode(self.to_dict())
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
