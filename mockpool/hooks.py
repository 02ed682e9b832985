"""Calling user hooks (factory, reset, health, snapshot, destroy), sync or async, bounded."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio

from .errors import HookTimeout, MockPoolError

T = TypeVar("T")

__all__ = (
    "awaited",
    "call_hook",
    "cancelled_for_real",
    "deadline",
    "given",
    "must_propagate",
    "running_loop",
)


def running_loop(name: str, action: str = "acquire", kind: str = "service") -> asyncio.AbstractEventLoop:
    """The running asyncio loop, or an error that says mockpool needs asyncio, naming the
    service (or pool: ``kind``) and the call (``action``)."""
    loop = asyncio._get_running_loop()
    if loop is None:
        raise MockPoolError(
            f"{kind} {name!r}: {action} needs a running asyncio event loop; mockpool runs on "
            "asyncio (under anyio, use the asyncio backend; trio is not supported)"
        )
    return loop


@contextmanager
def deadline(service: str, hook: str, timeout: float) -> Iterator[None]:
    """``anyio.fail_after(timeout)`` whose timeout names the service and the hook."""
    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
        yield
    if scope.cancelled_caught:
        raise HookTimeout(service, hook, timeout)


async def call_hook(
    hook: Callable[..., Any], *args: Any, timeout: float | None = None, service: str = "", name: str = "hook"
) -> Any:
    """Call a sync or async hook; an async one is bounded by ``timeout`` (:class:`HookTimeout`
    naming ``service`` and the hook's ``name``). A ``CancelledError`` the hook raises while
    nothing cancels the task, or a ``GeneratorExit`` while nothing closes its coroutine, is
    the hook's failure (:func:`awaited`)."""
    try:
        result = hook(*args)
    except asyncio.CancelledError as exc:
        if cancelled_for_real():
            raise
        raise _stray(service, name) from exc
    except GeneratorExit as exc:  # a call does not close anything: the hook's own
        raise _stray(service, name, "GeneratorExit") from exc
    if not inspect.isawaitable(result):
        return result
    if timeout is None:
        return await awaited(result, service, name)
    with deadline(service, name, timeout):
        return await awaited(result, service, name)
    raise AssertionError("unreachable: the deadline raised")  # pragma: no cover


async def awaited(awaitable: Awaitable[T], service: str, name: str) -> T:
    """Await a hook's ``awaitable``. A ``CancelledError`` from it while nothing cancels the
    running task (the hook called ``result()`` on, or awaited, a future that something else
    cancelled) is no cancellation: it becomes a :class:`MockPoolError`, the hook's failure, as
    an exception would be. Propagated as a cancellation, it ended the runtime's task group,
    with every background job of the loop, and the creation it interrupted told its waiters
    nothing (they waited their whole timeout).

    So is a ``GeneratorExit`` from it while the task that awaits it runs: the coroutine is not
    being closed (collected, it is closed from outside any task, or from another one's step).
    Propagated, it ended the runtime's task group too (asyncio stops its loop for Ctrl-C, not
    for this), or stopped a close half-way."""
    me = _running_task()
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        if cancelled_for_real():
            raise
        raise _stray(service, name) from exc
    except GeneratorExit as exc:
        if me is None or _running_task() is not me:
            raise  # this coroutine is being closed: it must end now
        raise _stray(service, name, "GeneratorExit") from exc


def _running_task() -> asyncio.Task[Any] | None:
    loop = asyncio._get_running_loop()
    return None if loop is None else asyncio.current_task(loop)


def cancelled_for_real() -> bool:
    """Whether the running task is being cancelled (by ``Task.cancel``, which asyncio's and
    anyio's timeouts and scopes use, or by the end of its loop)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _stray(service: str, name: str, raised: str = "CancelledError") -> MockPoolError:
    if raised == "CancelledError":
        why = (
            "nothing cancelled its task (did it call result() on, or await, a future that "
            "something else cancelled?)"
        )
    else:
        why = "nothing closed its coroutine (did it close a generator and let the exception out?)"
    return MockPoolError(
        f"service {service!r}: the {name} hook raised {raised}, but {why}; counted as the hook's failure"
    )


def must_propagate(exc: BaseException) -> bool:
    """Whether a hook's ``exc`` must go on whatever the pool was doing: a cancellation, Ctrl-C,
    an exit. Any other BaseException (``pytest.fail`` or ``pytest.skip`` called in a hook) is
    the hook's failure, as an Exception is: let through an ``except Exception``, it left an
    instance recovering for good, or a close half-way."""
    return isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit))


def given(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """For ``start_soon``: hand over a coroutine made beforehand, so that one its task never
    started (cancelled before the first step: anyio 4.16 then never awaits it) can be closed
    unrun instead of warning "never awaited"."""
    return coro
