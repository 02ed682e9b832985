"""pytest glue for ``pytest stress``: the seed's graph on the plugin's pool, and the marks.

The tests carry both ``asyncio`` (pytest-asyncio) and ``asyncio_cooperative`` marks; whichever
runner is active runs them, and the other mark is registered here so ``--strict-markers`` holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mockpool import MockPool

from .graph import register_graph, stress_specs


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # pytest-asyncio-cooperative needs pytest-asyncio off (-p no:asyncio); the repository's
    # pytest-asyncio settings then name unknown options, which --strict-config refuses.
    if not pluginmanager.has_plugin("asyncio"):
        for name in ("asyncio_mode", "asyncio_default_fixture_loop_scope", "asyncio_default_test_loop_scope"):
            parser.addini(name, "pytest-asyncio's option, unused while pytest-asyncio is off")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "asyncio: run by pytest-asyncio (when it is active)")
    config.addinivalue_line("markers", "asyncio_cooperative: run by pytest-asyncio-cooperative (when active)")


def pytest_mockpool_register(pool: MockPool, config: pytest.Config) -> None:
    register_graph(pool, stress_specs())


@pytest.fixture(scope="session", autouse=True)
def _stress_invariants(mockpool: MockPool) -> Iterator[None]:
    """After the last test: the pool's invariants hold and nothing leaked; then close it."""
    _POOLS.append(mockpool)
    yield
    mockpool.check_invariants()
    leaks = {name: s.leaks for name, s in mockpool.stats().items() if s.leaks}
    assert not leaks, f"leaked leases: {leaks}"


_POOLS: list[MockPool] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the pool before the mockpool plugin does (see :func:`_close`)."""
    while _POOLS:
        pool = _POOLS.pop()
        if not pool.closed and asyncio._get_running_loop() is None:
            asyncio.run(_close(pool))


async def _noop() -> None:
    return None


async def _close(pool: MockPool) -> None:
    """Close with this loop's runtime already running. Works around a core bug: the plugin's
    ``pool.close()`` hangs when closing spawns the first background task of its loop (a group
    member with an async ``destroy``, e.g. plex under dashboard): ``aclose`` cancels that
    runtime's host task before it ever ran, so ``runtime.finished`` is never set."""
    pool.spawn(_noop)
    await asyncio.sleep(0)
    await pool.aclose()
