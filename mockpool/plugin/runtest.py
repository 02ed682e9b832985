"""The hooks around each test's run: the leases held as its setup begins, its mark checked, the
test noted as run (history then knows it, even if it leases nothing), its coroutine function
swapped for one that owns its leases (``coroutine``), the leak and isolation checks
(``leaks``) after its body and again after its fixtures are torn down, and the teardown report
made an error for a leak that a skip or xfail would hide."""

from __future__ import annotations

import inspect
from collections.abc import Generator

import pytest

from .coroutine import owned
from .leaks import check_isolation, check_leaks, new_leases, report_hidden_leaks
from .markers import check_mark
from .runners import is_cooperative
from .state import BEFORE, NEXT, USES_POOL, get_state


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    item.stash[NEXT] = nextitem
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    state = get_state(item.config)
    checked = False
    if state is not None and state.pool is not None:
        item.stash[BEFORE] = set(state.pool.active_leases())
        check_mark(state.pool, item)
        checked = True
    result = yield
    if state is not None and state.pool is not None:
        if not checked:
            check_mark(state.pool, item)  # the test's fixtures made the pool
        if item.stash.get(USES_POOL, False):
            state.pool.note_test(item.nodeid)  # history knows it, even if it leases nothing
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    state = get_state(item.config)
    if state is None or state.pool is None or not item.stash.get(USES_POOL, False):
        return (yield)
    from ..lease import lease_owner

    pool = state.pool
    if is_cooperative(item):
        # The test already ran in cooperative's loop; this is the replay that reports it.
        # Other tests may still hold leases, so only this test's own count.
        try:
            result = yield
        except BaseException as exc:
            check_leaks(
                state, item, [le for le in pool.active_leases() if le.owner == item.nodeid], "call", exc
            )
            raise
        check_leaks(state, item, [le for le in pool.active_leases() if le.owner == item.nodeid], "call", None)
        check_isolation(pool, item)
        return result
    at_call = set(pool.active_leases())
    token = lease_owner.set(item.nodeid)
    original = getattr(item, "obj", None)
    swapped = original is not None and inspect.iscoroutinefunction(original)
    if swapped:
        item.obj = owned(original, state, item)  # type: ignore[arg-type, attr-defined]
    try:
        result = yield
    except BaseException as exc:
        check_leaks(state, item, new_leases(state, pool, at_call), "call", exc)
        raise
    finally:
        lease_owner.reset(token)
        if swapped:
            item.obj = original  # type: ignore[attr-defined]
    check_leaks(state, item, new_leases(state, pool, at_call), "call", None)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    state = get_state(item.config)
    try:
        result = yield
    except BaseException as exc:
        if state is not None and state.pool is not None and not is_cooperative(item):
            check_leaks(
                state, item, new_leases(state, state.pool, item.stash.get(BEFORE, set())), "teardown", exc
            )
        raise
    if state is not None and state.pool is not None and not is_cooperative(item):
        # Function fixtures are finalized now: what this test's setup, body or fixtures
        # acquired and still hold is its leak.
        check_leaks(
            state, item, new_leases(state, state.pool, item.stash.get(BEFORE, set())), "teardown", None
        )
        check_isolation(state.pool, item)
    return result


# tryfirst: the outermost wrapper, so it sees the report after the skipping plugin has turned
# an xfail-marked test's teardown failure into "xfailed".
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "teardown":
        report_hidden_leaks(item, report)
    return report
