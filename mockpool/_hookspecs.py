"""Hooks that mockpool's pytest plugin adds to pytest (registered by ``pytest_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .pool import MockPool

__all__ = ("pytest_mockpool_register",)


@pytest.hookspec
def pytest_mockpool_register(pool: MockPool, config: pytest.Config) -> None:
    """Register services on the session's pool, in a ``conftest.py`` or a plugin::

        def pytest_mockpool_register(pool, config):
            pool.register(ServiceSpec(name="plex", factory=PlexFake))

    Called once per process (once per xdist worker), when the ``mockpool`` fixture is
    first requested, after the built-ins named in ``mockpool_services`` are registered, so a
    service may ``depends_on`` them.
    """
