"""Making the session's pool: its settings, the built-in services, then the
``pytest_mockpool_register`` hooks. A registration that fails is one usage error that names
the project's line that raised, never a trace through mockpool's frames."""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING

import pytest

from .builtin_services import register_builtins

if TYPE_CHECKING:
    from ..pool import MockPool
    from .state import State


def build(state: State) -> MockPool:
    """Make the session's pool and register its services, once. Called at the end of
    collection when a collected test uses the fixture (else when the fixture is first
    requested). A registration that fails raises :class:`pytest.UsageError` naming what
    failed and the line of the project's code that raised, without mockpool's frames."""
    if state.pool is not None:
        return state.pool
    if state.closed:
        raise pytest.UsageError(
            "mockpool: the session's pool is closed; the fixture was requested after the session ended"
        )
    if state.build_error is not None:
        raise pytest.UsageError(state.build_error)
    try:
        state.pool = _make(state)
    except pytest.UsageError as exc:
        state.build_error = str(exc)
        raise
    return state.pool


def _make(state: State) -> MockPool:
    from ..pool import MockPool

    s = state.settings
    share = state.workers
    pool = MockPool(
        name="pytest" if state.worker_id is None else f"pytest-{state.worker_id}",
        max_total=None if s.max_total is None else max(1, s.max_total // share),
        default_timeout=s.acquire_timeout,
        track_leases=True,
        supervise=s.supervise,
        history=state.history,
        config=state.config,
        isolation_verify=s.isolation_verify,
    )
    pool._managed_by = "the mockpool pytest plugin (the session's pool)"
    max_size = None if s.max_size is None else max(1, math.ceil(s.max_size / share))
    try:
        register_builtins(pool, s.services, max_size, s.service_options, share)
    except pytest.UsageError:
        raise
    except Exception as exc:
        raise pytest.UsageError(
            _registration_error(exc, f"registering mockpool_services = {' '.join(s.services)}")
        ) from None
    try:
        state.config.hook.pytest_mockpool_register(pool=pool, config=state.config)
    except Exception as exc:
        raise pytest.UsageError(_registration_error(exc, "pytest_mockpool_register")) from None
    return pool


def _registration_error(exc: BaseException, what: str) -> str:
    """A registration failure, told once: what failed, the error, and the line of the
    project's code that raised it (the deepest frame outside mockpool, pluggy and pytest)."""
    import traceback

    # The whole mockpool package, not this module's own (mockpool.plugin): the frames of
    # mockpool.spec and the pool are not the project's either.
    internal = tuple(
        os.path.dirname(os.path.abspath(m.__file__)) + os.sep
        for m in (sys.modules["mockpool"], sys.modules["pluggy"], sys.modules["_pytest"])
        if m.__file__
    )
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        # "<string>": code that dataclasses generate (ServiceSpec.__init__) is not the project's.
        if not frame.filename.startswith("<") and not os.path.abspath(frame.filename).startswith(internal):
            where = f" at {_relpath(frame.filename)}:{frame.lineno}"
    return f"mockpool: {what} failed{where}: {type(exc).__name__}: {exc}"


def _relpath(filename: str) -> str:
    try:
        return os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
