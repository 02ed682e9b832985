"""The code of mockpool's pytest plugin, one module per concern.

pytest registers :mod:`mockpool.pytest_plugin` only, which imports the hooks and the fixture
from these modules; none of them is a plugin itself. Each depends only on those listed above
it (``tests/test_layers.py`` keeps the import graph acyclic):

* ``builtin_services``: ``mockpool_services`` and ``mockpool_service_options``, typed and registered
* ``options``: the command-line and ini options, read into ``Settings``
* ``state``: what the plugin keeps per session and per test (data only)
* ``registration``: making the session's pool; registration errors without mockpool's frames
* ``warming``: creating ahead what history says the tests will acquire
* ``coroutine``: inside a test's coroutine: the lease owner, the loop's runtime
* ``leaks``: leases a test still holds, and state a reset left (isolation-verify)
* ``markers``: ``@pytest.mark.mockpool``
* ``runners``: which async runner runs a test
* ``cooperative``: pytest-asyncio-cooperative's scheduler, made to wait instead of spin, and
  its tests' tasks, made to own their leases
* ``collection``: after collection: who uses the pool, the pool made, the header line
* ``runtest``: the hooks around each test's run
* ``fixtures``: the ``mockpool`` fixture and the fixture setup hook
* ``cache``: the history in pytest's cache
* ``xdist``: workers and the controller
* ``summary``: the terminal summary and the JSON report
* ``session``: configure and the session's end
"""
