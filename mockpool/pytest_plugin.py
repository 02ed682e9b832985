"""The pytest plugin (entry point ``pytest11: mockpool``).

Tests request the session-scoped, synchronous ``mockpool`` fixture and write
``async with mockpool.acquire("redis") as redis:``. The plugin builds the pool on first use
(built-ins named in ``mockpool_services``, then ``pytest_mockpool_register`` hooks), warms it
from the history kept in pytest's cache, attributes leases to tests, fails tests that leak a
lease, prints a ``mockpool`` summary and, under xdist, merges what the workers report.

This is the module pytest registers; the code is in :mod:`mockpool.plugin`, one module per
concern (docs/architecture.md). pytest finds hooks and fixtures by their names on the module
it registers, so each is bound here to its own name; the package's modules are never
registered themselves, so no hook runs twice.

Importing this module imports nothing but pytest and the standard library; the pool, the
history and the built-in fakes are imported when first needed.
"""

from __future__ import annotations

from .plugin import cache, collection, fixtures, options, runtest, session, summary, xdist
from .plugin.builtin_services import BUILTIN_SERVICES
from .plugin.leaks import MockPoolLeakWarning

__all__ = ("BUILTIN_SERVICES", "MockPoolLeakWarning", "mockpool")

#: pytest cache key of the usage history (``pytest --cache-show 'mockpool/*'``).
HISTORY_KEY = cache.HISTORY_KEY

# The fixture and the hooks, bound to their names here, where pytest looks for them.
mockpool = fixtures.mockpool

pytest_addhooks = options.pytest_addhooks
pytest_addoption = options.pytest_addoption
pytest_configure = session.pytest_configure
pytest_report_header = collection.pytest_report_header
pytest_collection_modifyitems = collection.pytest_collection_modifyitems
pytest_report_collectionfinish = collection.pytest_report_collectionfinish
pytest_runtest_protocol = runtest.pytest_runtest_protocol
pytest_runtest_setup = runtest.pytest_runtest_setup
pytest_fixture_setup = fixtures.pytest_fixture_setup
pytest_runtest_call = runtest.pytest_runtest_call
pytest_runtest_teardown = runtest.pytest_runtest_teardown
pytest_runtest_makereport = runtest.pytest_runtest_makereport
pytest_sessionfinish = session.pytest_sessionfinish
pytest_configure_node = xdist.pytest_configure_node
pytest_testnodedown = xdist.pytest_testnodedown
pytest_terminal_summary = summary.pytest_terminal_summary
pytest_unconfigure = session.pytest_unconfigure
