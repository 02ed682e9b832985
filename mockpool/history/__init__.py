"""Usage history: what earlier runs needed, so the pool can warm to it before the first test.

Three modules, in the order a run meets them: :mod:`~mockpool.history.recorder` counts one
run's usage (:class:`UsageRecorder`, :class:`RunRecord`), :mod:`~mockpool.history.store` merges
runs and keeps them in a file (:class:`History`), and :mod:`~mockpool.history.format` is what
that file holds, its validation and its versions. Import everything from here.

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
"""

from __future__ import annotations

# Importable from here before the split, though not in __all__.
from .format import DEFAULT_LIMITS as DEFAULT_LIMITS
from .format import (
    FORMAT,
    RUN_FORMAT,
    VERSION,
    HistoryFormatError,
    Limits,
    MockPoolHistoryWarning,
    ServiceHistory,
    ServiceUsage,
    TestHistory,
)
from .recorder import RunRecord, UsageRecorder
from .store import History

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
