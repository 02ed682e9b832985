"""pytest-asyncio-cooperative's scheduler, made to wait instead of spin (its issue #84).

Up to at least 0.40, its ``run_tests`` waits for the running tests with
``asyncio.wait(tasks, timeout=min(30, int(elapsed - task_timeout)))``: the operands are flipped,
so the timeout is negative until a test overruns its task timeout (ten minutes by default), and
``asyncio.wait`` returns at once. The scheduler then spins: every turn of the loop it waits
again, on every running test (a callback added to and taken from each), and the loop never
waits for I/O or a timer. That costs the tests a CPU (the stress suite, 1,199 tests at once:
3.1-3.2 s under the runner against 1.1-1.2 s under ``python -m stress``), and the pool reads a
loop that never waits as saturated: it made no more instances, so tests that await in their
leases ran a few at a time.

The fix proposed upstream (pull request #85) waits for the time left before the first test
would overrun, at least 1 s and at most 30 s. Alone, it starves a suite larger than
``--max-asyncio-tasks``: the scheduler starts one waiting test per return of ``asyncio.wait``,
which its spinning made constant; waiting, it started one per completion, and 600 tests at 100
at a time took 11.3 s instead of 5.2 s. So while tests wait to start (the scheduler's
``sidelined_tasks``, read from its frame) and a slot is free, the wait returns at once as
before and the scheduler fills the slot on its next turn; otherwise it waits.

This module does that by giving the plugin's module an ``asyncio`` whose ``wait`` does it,
when, and only when, it finds the flipped line in ``run_tests``. The ini option
``mockpool_fix_cooperative_wait = false`` leaves the runner as it is.

It also makes each test own the leases taken in its task (:func:`own_leases`): cooperative
fills a test's fixtures, runs it and tears the fixtures down in one task per test, outside
anything pytest's hooks wrap, so the coroutine it makes per test is wrapped instead; and it
fills a module or session fixture in the task of the first test that asks, so that fill sets
no owner (such a fixture's leases belong to no test, as under the other runners).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sized
from types import ModuleType
from typing import Any

import pytest

from .coroutine import owned_task
from .options import flag
from .state import USES_POOL, get_state

__all__ = ("APPLIED", "FLIPPED", "OWNING", "CooperativeAsyncio", "fix_busy_wait", "own_leases", "undo")

#: The line of ``run_tests`` with the operands flipped (elapsed less the timeout).
FLIPPED = "time_to_wait = (time.time() - earliest_enqueue_time) - task_timeout"

_MODULE = "pytest_asyncio_cooperative.plugin"
_FIXTURES = "pytest_asyncio_cooperative.fixtures"


class CooperativeAsyncio:
    """``asyncio``, as the cooperative plugin's module sees it: ``wait`` reads its timeout
    as the flipped one the scheduler computes; everything else is asyncio's own."""

    def __init__(self, real: ModuleType, max_tasks: int) -> None:
        self.real = real
        self.max_tasks = max_tasks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def wait(
        self,
        fs: Iterable[Awaitable[Any]],
        *,
        timeout: float | None = None,
        return_when: str = asyncio.ALL_COMPLETED,
    ) -> tuple[set[Any], set[Any]]:
        if timeout is not None and not self._filling(len(fs) if isinstance(fs, Sized) else 0):
            # ``-timeout`` is the time left before the first test overruns; past it (or under
            # a second, which int() made 0) poll once a second, as upstream's fix does.
            timeout = max(1.0, min(30.0, -timeout))
        done, pending = await self.real.wait(fs, timeout=timeout, return_when=return_when)
        return done, pending

    def _filling(self, running: int) -> bool:
        """Tests wait to start and a slot is free: the scheduler starts one per return."""
        if running >= self.max_tasks:
            return False
        # This coroutine's body runs first inside the scheduler's frame, which awaits it.
        caller = sys._getframe(2)
        if caller.f_code.co_name != "run_tests":
            return True  # not the scheduler we know: keep its behaviour
        return bool(caller.f_locals.get("sidelined_tasks"))


#: Set on the config of the session that applied the fix: only that session takes it back.
APPLIED = pytest.StashKey[bool]()


def fix_busy_wait(config: pytest.Config) -> bool:
    """Apply the fix to the cooperative plugin if it is loaded, has the flipped line and the
    ini option allows it. True if the runner waits now (fixed here or before)."""
    if not flag(config, "mockpool_fix_cooperative_wait"):
        return False
    if not config.pluginmanager.has_plugin("asyncio-cooperative"):
        return False
    module = sys.modules.get(_MODULE)
    if module is None:
        return False
    if isinstance(getattr(module, "asyncio", None), CooperativeAsyncio):
        return True
    try:
        source = inspect.getsource(module.run_tests)
    except (AttributeError, OSError, TypeError):
        return False
    if FLIPPED not in source or getattr(module, "asyncio", None) is not asyncio:
        return False  # another version: left as it is
    try:  # as the scheduler reads it (_run_test_loop)
        max_tasks = int(config.getoption("--max-asyncio-tasks") or config.getini("max_asyncio_tasks"))
    except (ValueError, TypeError):
        return False
    module.asyncio = CooperativeAsyncio(asyncio, max_tasks)  # type: ignore[attr-defined]
    config.stash[APPLIED] = True
    return True


def undo(config: pytest.Config) -> None:
    """Give the cooperative plugin's modules what they had at the end of the session that
    changed them (an in-process pytest run leaves the modules as it found them, and one run
    inside another leaves the outer one's changes in place)."""
    if config.stash.get(OWNING, False):
        del config.stash[OWNING]
        for name, attribute, kind in _OWNED:
            module = sys.modules.get(name)
            found = getattr(module, attribute, None)
            if module is not None and isinstance(found, kind):
                setattr(module, attribute, found.real)
    if not config.stash.get(APPLIED, False):
        return
    del config.stash[APPLIED]
    module = sys.modules.get(_MODULE)
    shim = getattr(module, "asyncio", None)
    if module is not None and isinstance(shim, CooperativeAsyncio):
        module.asyncio = shim.real  # type: ignore[attr-defined]


#: Set on the config of the session that made cooperative's tests own their leases.
OWNING = pytest.StashKey[bool]()


class _OwnedTasks:
    """Cooperative's ``item_to_task``: the coroutine it makes for a test that uses the pool,
    run by :func:`~.coroutine.owned_task` (the test owns the leases of its whole task)."""

    def __init__(self, real: Callable[[pytest.Item], Coroutine[Any, Any, Any]]) -> None:
        self.real = real

    def __call__(self, item: pytest.Item) -> Coroutine[Any, Any, Any]:
        task = self.real(item)
        state = get_state(item.config)
        if state is None or not item.stash.get(USES_POOL, False):
            return task
        return owned_task(task, state, item)


class _UnownedWiderFixtures:
    """Cooperative's ``fill_fixture_fixtures``: a module or session fixture is filled with no
    lease owner, though in a test's task (no test leaks what such a fixture holds)."""

    def __init__(self, real: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        self.real = real

    async def __call__(self, fixtureinfo: Any, fixture: Any, item: pytest.Item) -> Any:
        if getattr(fixture, "scope", "function") == "function":
            return await self.real(fixtureinfo, fixture, item)
        from ..lease import lease_owner

        token = lease_owner.set(None)
        try:
            return await self.real(fixtureinfo, fixture, item)
        finally:
            lease_owner.reset(token)


#: What :func:`own_leases` replaces: (module, attribute, the wrapper).
_OWNED: tuple[tuple[str, str, type[_OwnedTasks | _UnownedWiderFixtures]], ...] = (
    (_MODULE, "item_to_task", _OwnedTasks),
    (_FIXTURES, "fill_fixture_fixtures", _UnownedWiderFixtures),
)


def own_leases(config: pytest.Config) -> bool:
    """Make each cooperative test that uses the pool own the leases taken in its task, and
    wider fixtures own none (the module's docstring). True if they do (made here or before);
    False where cooperative is not loaded or is a version without those functions."""
    if not config.pluginmanager.has_plugin("asyncio-cooperative"):
        return False
    found = [(sys.modules.get(name), attribute, kind) for name, attribute, kind in _OWNED]
    if any(not callable(getattr(module, attribute, None)) for module, attribute, _ in found):
        return False
    for module, attribute, kind in found:
        current = getattr(module, attribute)
        if not isinstance(current, kind):
            setattr(module, attribute, kind(current))
            config.stash[OWNING] = True
    return True
