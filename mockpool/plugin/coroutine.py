"""What runs inside each test's coroutine, in the test's own task and loop.

How a test's leases are attributed to it (``Lease.owner``, the ``lease_owner`` ContextVar):

* The test body: around ``pytest_runtest_call`` the plugin sets ``lease_owner`` and swaps the
  item's coroutine function for :func:`owned`, which sets it again *inside* the coroutine, so
  it holds whichever task runs the test (pytest-asyncio copies the caller's context; anyio
  runs tests in a long-lived runner task that the caller's context never reaches).
* pytest-asyncio-cooperative runs each test in a task of its own, all in one loop: its
  fixtures, its body and their teardowns. The plugin wraps the coroutine cooperative makes
  per test in :func:`owned_task`, which sets the owner first, so the test owns what its
  function-scoped fixtures acquire too; its wider fixtures are filled with no owner
  (``cooperative``).
* Function-scoped fixtures: the owner is set around ``pytest_fixture_setup`` (``fixtures``);
  async fixtures see it where the runner copies the caller's context (pytest-asyncio).

Event loops: the pool's state is loop-agnostic; its runtime (waiter futures, background
creations, supervisors) is per loop. At the start of each test's coroutine, in the test's loop,
the wrapper calls ``pool.enter_loop()``: the pool's own loop gets its runtime at once, a
test's own loop a timer that starts it (supervisors and all) once the loop has lived 0.1 s,
unless background work started it first. Then it asks the pool for what this test and the
next collected one will acquire (``pool.expect``). A runtime ends when the runner closes its
loop. Cost and trade-offs: docs/pytest.md.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import pytest

from .state import NEXT

if TYPE_CHECKING:
    from ..pool import MockPool
    from .state import State


def _enter_test(state: State, item: pytest.Item | None, wanted: tuple[str, ...]) -> None:
    """At the start of a test's coroutine, in its loop: see that the supervisors run while the
    test does (``MockPool.enter_loop``), and create ahead what this test and the next one
    will acquire."""
    pool = state.pool
    if pool is None or pool.closed:
        return
    if state.settings.supervise:
        pool.enter_loop()
    if state.settings.warm and wanted:
        pool.expect(wanted)


def owned(fn: Callable[..., Coroutine[Any, Any, Any]], state: State, item: pytest.Item) -> Callable[..., Any]:
    """``fn``, the test's coroutine function, as one that owns its leases in the task that
    runs it and enters the test's loop first (the module's docstring)."""
    from ..errors import MockPoolError
    from ..lease import lease_owner

    nodeid = item.nodeid

    @functools.wraps(fn)
    async def run_owned(*args: Any, **kwargs: Any) -> Any:
        token = lease_owner.set(nodeid)
        try:
            if asyncio._get_running_loop() is None:
                return await _off_asyncio(state, nodeid, fn(*args, **kwargs), MockPoolError)
            _enter_test(
                state, item, state.services_for(item) + state.services_for(item.stash.get(NEXT, None))
            )
            result = await fn(*args, **kwargs)
            # One loop turn before the runner may close a function-scoped loop: background
            # tasks the pool spawned during the test's last step get to start, so cancelling
            # them at loop close cannot leave a coroutine that was never awaited.
            await asyncio.sleep(0)
            return result
        finally:
            lease_owner.reset(token)

    return run_owned


async def _off_asyncio(
    state: State, nodeid: str, test: Coroutine[Any, Any, Any], own_error: type[Exception]
) -> Any:
    """Run a test's coroutine under an async library that is not asyncio (anyio's trio
    backend): there is no runtime to start, and acquiring must say that mockpool runs on
    asyncio. An acquire that waits says so itself (``hooks.running_loop``); one served at once
    by an idle (warmed) instance cannot, without a check on the fast path: it may even work, or
    fail later inside a loop-bound instance (fakeredis: "no running event loop"). So a test
    that acquired here fails with the same explanation, or its error gets it as a note.
    (``own_error`` is ``MockPoolError``, imported by the caller: no import runs in a coroutine.)"""
    pool = state.pool
    try:
        result = await test
    except own_error:
        raise  # the acquire's own message
    except BaseException as exc:
        if (message := _off_asyncio_message(pool, nodeid)) is not None:
            exc.add_note(message)
        raise
    if (message := _off_asyncio_message(pool, nodeid)) is not None:
        pytest.fail(message, pytrace=False)
    return result


def _off_asyncio_message(pool: MockPool | None, nodeid: str) -> str | None:
    used = sorted(pool.test_services.get(nodeid, ())) if pool is not None else []
    if not used:
        return None
    try:
        import sniffio

        library = sniffio.current_async_library()
    except Exception:
        library = "an async library that is not asyncio"
    return (
        f"mockpool: {nodeid} acquired {', '.join(map(repr, used))} under {library}; mockpool runs "
        "on asyncio (under anyio, use the asyncio backend; trio is not supported). An idle "
        "instance served the acquire at once, before anything could check the loop."
    )


async def owned_task(task: Coroutine[Any, Any, Any], state: State, item: pytest.Item) -> Any:
    """Run ``task``, the coroutine pytest-asyncio-cooperative made for ``item`` (fixtures, body,
    teardowns), as the owner of its leases, after entering the test's loop (``_enter_test``).
    Cooperative starts every test at once, so there is no next test to create ahead for."""
    from ..lease import lease_owner

    token = lease_owner.set(item.nodeid)
    try:
        _enter_test(state, item, state.services_for(item))
        return await task
    finally:
        lease_owner.reset(token)
