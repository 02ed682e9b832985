"""The session's life: the state made as pytest is configured (settings, xdist, history),
and, at the end, the pool closed (leases still held recorded as leaks), then the history saved
and the report written, or, on an xdist worker, everything handed to the controller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .cache import load_history, read_cache, save_history
from .cooperative import fix_busy_wait
from .cooperative import undo as undo_busy_wait_fix
from .leaks import record_leak
from .markers import register_marker
from .options import Settings
from .state import STATE, State, get_state
from .summary import services_payload, write_report
from .xdist import processes, report_to_controller


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)
    settings = Settings.read(config)
    worker_id, workers, controller = processes(config)
    state = State(
        config=config, settings=settings, worker_id=worker_id, workers=max(1, workers), controller=controller
    )
    if settings.history:
        # A worker warms from the history the controller handed it (pytest_configure_node).
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        cached = workerinput.get("mockpool_history") if workerinput is not None else read_cache(config)
        if cached is not None or workerinput is None:
            load_history(state, cached)
    config.stash[STATE] = state
    fix_busy_wait(config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = get_state(session.config)
    if state is None:
        return
    close(state)
    if report_to_controller(state):
        return  # a worker: the controller merges, prints and writes the cache once
    save_history(state)
    write_report(state)


def pytest_unconfigure(config: pytest.Config) -> None:
    undo_busy_wait_fix(config)
    # sessionfinish does not run when the session never starts (usage errors): close here.
    state = get_state(config)
    if state is not None and not state.closed and state.pool is not None and not _loop_running():
        close(state)


def close(state: State) -> None:
    """End the pool: record leases still held, close, and keep what to report."""
    if state.closed:
        return
    state.closed = True
    pool = state.pool
    if pool is None:
        return
    # Every fixture is finalized by now: whatever is still held leaked, except a lease a
    # test was allowed to keep (neither listed nor counted: the leaks column and the list
    # agree). Take the instances back, so that closing does not wait ``close_timeout`` for
    # leases that will never end.
    for lease in pool.active_leases():
        allowed = lease in state.allowed
        if not allowed:
            state.leaks.append(
                record_leak(state.config, lease, lease.owner or "(no test: a fixture)", "session end")
            )
        pool.reclaim(lease, leak=not allowed)
    run = pool.run_record().to_dict() if state.settings.history else None
    if not pool.closed and not _loop_running():
        # Not pool.close(): asyncio.run sets the thread's current loop and then clears it,
        # dropping the loop a runner left there. pytest-asyncio 0.23 leaves one after each
        # test; dropped, it is collected unclosed (ResourceWarning). A loop_factory keeps
        # the current loop as it is, as in warming.warm().
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(pool.aclose())
    report = pool.report()
    state.outputs.append(
        {
            "worker": state.worker_id,
            "services": services_payload(pool),
            "leaks": [leak.to_dict() for leak in state.leaks],
            "runner": state.runner,
            "warmup_s": pool.warmup_s,
            "warmed": dict(state.warmed),
            "report": report.to_dict(),
            "run": run,
        }
    )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
