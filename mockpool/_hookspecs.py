"""Hooks that mockpool's pytest plugin adds to pytest.

Declared twice over, on purpose: by the plugin (``pytest_addhooks``), and by the entry point
``pytest11: mockpool.hookspecs`` (:class:`Declaration`), which does nothing else. So
``-p no:mockpool`` turns the plugin off while a ``conftest.py`` that implements
``pytest_mockpool_register`` still loads: the hook stays known and is never called. Without
that second entry point pytest stops with ``INTERNALERROR ... unknown hook
'pytest_mockpool_register'`` (pluggy's check of hook implementations). A conftest meant to
work where mockpool is not installed at all marks its implementation
``@pytest.hookimpl(optionalhook=True)``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .pool import MockPool

__all__ = ("Declaration", "declare", "pytest_mockpool_register")


@pytest.hookspec
def pytest_mockpool_register(pool: MockPool, config: pytest.Config) -> None:
    """Register services on the session's pool, in a ``conftest.py`` or a plugin::

        def pytest_mockpool_register(pool, config):
            pool.register(ServiceSpec(name="plex", factory=PlexFake))

    Called once per process (once per xdist worker), when the session's pool is made: at the
    end of collection if a collected test uses the ``mockpool`` fixture, else when the fixture
    is first requested. Runs after the built-ins named in ``mockpool_services`` are
    registered, so a service may ``depends_on`` them.
    """


def declare(pluginmanager: pytest.PytestPluginManager) -> None:
    """Add the hookspecs unless the other declaring plugin already did (pluggy refuses a
    second specification of the same hook)."""
    hook = getattr(pluginmanager.hook, "pytest_mockpool_register", None)
    if hook is None or hook.spec is None:
        pluginmanager.add_hookspecs(sys.modules[__name__])


class Declaration:
    """The plugin of the entry point ``pytest11: mockpool.hookspecs``: declares the hooks and
    does nothing else (a class, so that pluggy does not take ``pytest_addhooks`` for a
    hookspec of this module)."""

    @staticmethod
    def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
        declare(pluginmanager)
