"""Which async runner runs the tests that use the pool: pytest-asyncio, anyio's plugin,
pytest-asyncio-cooperative, or none (sync tests), as the header line and the report name
them; and whether cooperative runs a given test, which changes how its leases are tracked."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from .state import USES_POOL


def is_cooperative(item: pytest.Item) -> bool:
    # Cooperative runs the items carrying its mark on the item itself (own_markers).
    return any(
        m.name == "asyncio_cooperative" for m in item.own_markers
    ) and item.config.pluginmanager.has_plugin("asyncio-cooperative")


def _asyncio_runner(config: pytest.Config) -> str:
    mode = config.getoption("asyncio_mode", None) or config.getini("asyncio_mode")
    try:
        scope = config.getini("asyncio_default_test_loop_scope") or "function"
    except ValueError:  # pytest-asyncio < 0.26 has no such option
        scope = "function"
    return f"pytest-asyncio ({mode}, {scope} loop)"


def runner_names(config: pytest.Config, items: Iterable[pytest.Item] | None = None) -> str:
    """The async runners that run the tests using the pool, as the header line and the report
    name them. With the collected ``items``: the runner of each test that uses the fixture
    (anyio's plugin, always installed with mockpool, is named only when it runs one). Without
    (the xdist controller, which collects nothing): the plugins that run unmarked async tests."""
    pm = config.pluginmanager
    found: dict[str, None] = {}
    if items is None:
        if pm.has_plugin("asyncio-cooperative"):
            found["asyncio-cooperative"] = None
        if pm.has_plugin("asyncio"):
            found[_asyncio_runner(config)] = None
        # anyio's ini option exists only while its plugin is loaded (-p no:anyio removes it).
        if pm.has_plugin("anyio") and "auto" in (
            config.getoption("anyio_mode", None),
            config.getini("anyio_mode"),
        ):
            found["anyio (auto mode)"] = None
    else:
        for item in items:
            if not item.stash.get(USES_POOL, False):
                continue
            if is_cooperative(item):
                found["asyncio-cooperative"] = None
            elif "anyio_backend" in getattr(item, "fixturenames", ()):
                found["anyio"] = None  # anyio's plugin asks every test it runs for the backend
            elif item.get_closest_marker("asyncio") is not None and pm.has_plugin("asyncio"):
                found[_asyncio_runner(config)] = None  # auto mode marks the tests it takes
    return join_runners(found)


#: What ``runner_names`` says when no async runner runs a test that uses the pool.
SYNC_ONLY = "none (sync tests only)"


def join_runners(names: Iterable[str]) -> str:
    """``names`` (runners, or what ``runner_names`` said in several processes) as one name:
    each runner once, in a fixed order."""
    found = {runner: None for name in names if name != SYNC_ONLY for runner in name.split(" + ") if runner}
    order = ("pytest-asyncio", "anyio", "asyncio-cooperative")
    named = sorted(found, key=lambda runner: [runner.startswith(o) for o in order].index(True))
    return " + ".join(named) or SYNC_ONLY
