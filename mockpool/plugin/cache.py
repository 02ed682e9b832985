"""The usage history in pytest's cache: read as the session starts (a corrupt or foreign entry
is ignored, with a note in the summary), and this run merged in and written at its end, once,
by the process that is not an xdist worker."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .state import State

#: pytest cache key of the usage history (``pytest --cache-show 'mockpool/*'``).
HISTORY_KEY = "mockpool/history"


def read_cache(config: pytest.Config) -> object:
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    return cache.get(HISTORY_KEY, None)


def load_history(state: State, cached: object) -> None:
    from ..history import History

    # A corrupt or foreign cache entry is ignored with a note in the summary, never a crash
    # and never an error under filterwarnings=error.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state.history = History.from_cache(cached) if cached is not None else History()
    if caught:
        state.history_note = f"history in the cache ignored: {caught[0].message}"


def save_history(state: State) -> None:
    """Merge this run (all workers at once) into the cached history and write it: only here,
    in the process that is not an xdist worker."""
    cache = getattr(state.config, "cache", None)
    if cache is None or not state.settings.history or state.history is None:
        return
    from ..history import HistoryFormatError, RunRecord

    runs = []
    for out in state.outputs:
        if out.get("run") is None:
            continue
        try:
            runs.append(RunRecord.from_dict(out["run"]))
        except HistoryFormatError as exc:
            state.history_note = f"worker {out.get('worker')}: run record ignored: {exc}"
    if not runs:
        return
    merged = state.history.merge(RunRecord.combine(runs))
    cache.set(HISTORY_KEY, merged.to_dict())
    state.history_note = (state.history_note + "; " if state.history_note else "") + (
        f"history: {merged.runs} run(s) kept in pytest's cache ({HISTORY_KEY})"
    )
