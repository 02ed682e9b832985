"""The ``mockpool`` fixture, and the fixture setup hook: the lease owner around each
function-scoped fixture (a wider fixture's leases belong to no test), and the fixture's own
function given back where pytest-asyncio-cooperative replaced it (by an async caching wrapper,
which would give sync tests a coroutine)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from .registration import build
from .state import State, get_state
from .warming import warm

if TYPE_CHECKING:
    from ..pool import MockPool


@pytest.fixture(scope="session")
def mockpool(request: pytest.FixtureRequest) -> MockPool:
    """The session's pool (one per xdist worker). Synchronous, so any runner can use it:
    ``async with mockpool.acquire("redis") as redis: ...`` in the test."""
    state = get_state(request.config)
    if state is None:  # pragma: no cover - pytest_configure always runs first
        raise pytest.UsageError("mockpool: the plugin was not configured")
    try:
        return _get_pool(state)
    except pytest.UsageError as exc:
        message = str(exc)
    # The registration failed (an xdist worker, or a pool first made here through
    # getfixturevalue): the message, without the plugin's frames.
    pytest.fail(message, pytrace=False)


def _get_pool(state: State) -> MockPool:
    """The pool, made if it was not yet, and warmed the first time it is asked for."""
    pool = build(state)
    if not state.warm_started:
        state.warm_started = True
        if state.settings.warm:
            warm(state, pool)
    return pool


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    if fixturedef.argname == "mockpool":
        # pytest-asyncio-cooperative swaps a session fixture's function for an async caching
        # wrapper (``CachedFunction``), which would hand a coroutine to the sync tests it
        # leaves to pytest; give pytest the plain fixture back.
        wrapped = getattr(fixturedef.func, "wrapped_func", None)
        if wrapped is not None:
            fixturedef.func = wrapped  # type: ignore[misc]
    state = get_state(request.config)
    if state is None or state.pool is None:
        result = yield
        if state is not None and state.pool is not None and fixturedef.scope != "function":
            state.scoped.update(state.pool.active_leases())
        return result
    from ..lease import lease_owner

    pool = state.pool
    if fixturedef.scope == "function":
        # Where contextvars flow into fixtures (pytest-asyncio, sync code), a function
        # fixture's leases belong to its test.
        token = lease_owner.set(request.node.nodeid)
        try:
            return (yield)
        finally:
            lease_owner.reset(token)
    # A wider fixture's leases belong to no test: remember them so no test reports them.
    token = lease_owner.set(None)
    before = set(pool.active_leases())
    try:
        return (yield)
    finally:
        lease_owner.reset(token)
        state.scoped.update(lease for lease in pool.active_leases() if lease not in before)
