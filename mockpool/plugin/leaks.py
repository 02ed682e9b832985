"""What a test leaves behind: leases it still holds when it ends (leaks), and, in
isolation-verify mode, state that the reset of its instances did not clean.

A leaked lease's instance is taken back and sent to recovery, and the test fails (or warns,
``mockpool_leaks``). Leaks are found per runner: sequential runners (plain pytest,
pytest-asyncio, anyio) compare the held leases with those held before the test (so leases of
session/module fixtures never count), cooperative ones select the leases whose owner is the
test. The hooks that call these checks are in ``runtest``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from .state import ALLOW_LEAK, HIDDEN_LEAKS, Leak

if TYPE_CHECKING:
    from ..lease import Lease
    from ..pool import MockPool
    from .state import State


class MockPoolLeakWarning(pytest.PytestWarning):
    """A test ended while holding a lease (``mockpool_leaks = warn``)."""

    # Its public home, where users name it (``-W error::mockpool.pytest_plugin.MockPoolLeakWarning``).
    __module__ = "mockpool.pytest_plugin"


def check_isolation(pool: MockPool, item: pytest.Item) -> None:
    """Fail a test whose leases left state that the reset did not clean (isolation-verify
    mode): the next test would have seen it, had the pool not caught it and recovered."""
    found = pool.take_isolation_failures(item.nodeid)
    if found:
        pytest.fail(
            f"mockpool: {item.nodeid} left state that the reset did not clean:\n"
            + "\n".join(f"  {error}" for error in found)
            + "\nThe pool caught it (mockpool_isolation_verify) and sent the instance to recovery; "
            "the next test would otherwise have seen it.",
            pytrace=False,
        )


def new_leases(state: State, pool: MockPool, before: set[Lease[Any]]) -> list[Lease[Any]]:
    active = pool.active_leases()
    state.scoped.intersection_update(active)
    return [lease for lease in active if lease not in before and lease not in state.scoped]


def check_leaks(
    state: State, item: pytest.Item, leaked: list[Lease[Any]], phase: str, failure: BaseException | None
) -> None:
    """Take back the instances of leases ``item`` still holds and fail it (or warn)."""
    if not leaked or state.settings.leaks == "off":
        return
    if item.stash.get(ALLOW_LEAK, False):
        state.scoped.update(leaked)
        state.allowed.update(leaked)
        return
    assert state.pool is not None
    lines = []
    for lease in leaked:
        leak = record_leak(state.config, lease, item.nodeid, phase)
        state.leaks.append(leak)
        lines.append(f"  service {leak.service!r}, acquired at {leak.where}")
        state.pool.reclaim(lease)
    where = "its body" if phase == "call" else "its fixtures or a task it started"
    message = (
        f"mockpool: {item.nodeid} ended still holding {len(leaked)} lease(s) taken in {where}:\n"
        + "\n".join(lines)
        + "\nThe instance was taken back and sent to recovery. Leave the 'async with "
        "pool.acquire(...)' block (and await any task that holds a lease) before the test "
        "ends, or mark the test @pytest.mark.mockpool(allow_leak=True) if the lease must "
        "outlive it."
    )
    if state.settings.leaks == "warn":
        item.warn(MockPoolLeakWarning(message))
        return
    if _would_hide(item, failure):
        # A skip, or an xfail (called or marked), turns a failure of this test into its own
        # outcome: the leak would read as "skipped" or "xfailed". runtest reports it as an
        # error at teardown instead, beside that outcome.
        item.stash.setdefault(HIDDEN_LEAKS, []).append(message)
        return
    if failure is not None:
        failure.add_note(message)
        return
    pytest.fail(message, pytrace=False)


def _would_hide(item: pytest.Item, failure: BaseException | None) -> bool:
    """Whether the outcome of ``item`` would absorb a failure for its leak: it skipped, called
    ``pytest.xfail``, or has an xfail mark (any failure, even its teardown's, then reads as
    xfailed; the mark's condition is not evaluated, so a false one counts too)."""
    if isinstance(failure, (pytest.skip.Exception, pytest.xfail.Exception)):
        return True
    return item.get_closest_marker("xfail") is not None and not item.config.option.runxfail


def report_hidden_leaks(item: pytest.Item, report: pytest.TestReport) -> None:
    """Make the teardown ``report`` of ``item`` an error naming the leaks its skip or xfail
    would have hidden (``check_leaks``)."""
    messages = item.stash.get(HIDDEN_LEAKS, None)
    if not messages:
        return
    del item.stash[HIDDEN_LEAKS]
    message = "\n".join(messages)
    if report.failed:
        report.sections.append(("mockpool: leaked lease(s)", message))
    else:
        # Passed, or its own failure taken for the expected one by an xfail mark.
        report.longrepr = message
    report.outcome = "failed"
    if hasattr(report, "wasxfail"):
        del report.wasxfail


def record_leak(config: pytest.Config, lease: Lease[Any], test: str, phase: str) -> Leak:
    where = "an unknown line"
    if lease.where is not None:
        filename, line = lease.where
        try:
            filename = os.path.relpath(filename, config.rootpath)
        except ValueError:  # another drive on Windows
            pass
        where = f"{filename}:{line}"
    return Leak(test=test, service=lease.service, where=where, phase=phase)
