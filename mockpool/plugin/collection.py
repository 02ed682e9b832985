"""Collection and the header: one pass over the collected tests (who uses the pool, their
marks, the services to warm), cooperative's tasks made to own their leases, the pool made as
collection ends (a registration error stops the run there, once), and the ``mockpool:`` header
line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from .cooperative import own_leases
from .markers import read_mark
from .registration import build
from .runners import is_cooperative, runner_names
from .state import USES_POOL, State, get_state


def _mockpool_line(config: pytest.Config, state: State, runner: str | None) -> str:
    services = list(state.settings.services)
    if _hook_implemented(config):
        services.append("+ pytest_mockpool_register")
    where = f"{state.workers} xdist workers, a pool each" if state.controller else "no xdist"
    runs = f"; runner: {runner}" if runner is not None else ""
    return f"mockpool: services: {' '.join(services) or 'none yet'}{runs}; {where}"


def _hook_implemented(config: pytest.Config) -> bool:
    return bool(config.pluginmanager.hook.pytest_mockpool_register.get_hookimpls())


def pytest_report_header(config: pytest.Config) -> str | None:
    """The xdist controller's mockpool line (it collects nothing, so it is told here, from
    the configuration); elsewhere the line comes after collection."""
    state = get_state(config)
    if state is None or not state.controller:
        return None
    if not state.settings.services and not _hook_implemented(config):
        return None  # the project does not use mockpool: say nothing
    state.announced = True
    return _mockpool_line(config, state, None)


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Path, items: Sequence[pytest.Item]
) -> str | None:
    """The mockpool line, where the project uses mockpool (services configured, the hook
    implemented or a collected test using the fixture), with the runners of those tests."""
    state = get_state(config)
    if (
        state is None
        or state.announced
        or config.option.verbose < 0
        or getattr(config.option, "no_header", False)
    ):
        return None
    users = sum(1 for item in items if item.stash.get(USES_POOL, False))
    if not users and not state.settings.services and not _hook_implemented(config):
        return None
    runner = state.runner if users else "no collected test uses the mockpool fixture"
    return _mockpool_line(config, state, runner)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """One pass over the items: marks, who uses the pool, the services to warm. Then, if a
    cooperative test uses the pool, make its task own its leases; if any test does, make the
    pool: a registration error stops the run here, once, as a usage error, rather than failing
    every test that asks for the fixture."""
    state = get_state(config)
    if state is None:
        return
    cooperative = config.pluginmanager.has_plugin("asyncio-cooperative")
    history = state.history
    users = 0
    owned = False
    for item in items:
        uses_pool = "mockpool" in getattr(item, "fixturenames", ())
        users += uses_pool
        item.stash[USES_POOL] = uses_pool
        read_mark(state, item)
        if uses_pool and item.nodeid in state.marked:
            state.known = True
        if history is not None and uses_pool and item.nodeid in history.tests:
            state.known = True
            state.planned.update(history.services_for_test(item.nodeid))
        owned = owned or (uses_pool and cooperative and is_cooperative(item))
    if history is not None and users:
        from ..history.format import OUTSIDE_TESTS

        # Leased by wider fixtures or threads: no test claims them, so every run warms them.
        state.planned.update(history.services_for_test(OUTSIDE_TESTS))
    state.runner = runner_names(config, items)
    if owned and not config.option.collectonly:
        own_leases(config)
    if users and not config.option.collectonly:
        try:
            build(state)
        except pytest.UsageError as exc:
            if state.worker_id is None:
                raise
            # An xdist worker cannot end the run from its collection (xdist then reports an
            # INTERNALERROR): stop after its first test, which fails with the message; the
            # controller ends the run, "Interrupted: <the message>".
            session.shouldstop = str(exc)
