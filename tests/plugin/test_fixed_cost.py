"""What a pytest process pays for the plugin: the modules it loads (docs/performance.md,
"The plugin's cost per process"). Checked by the modules loaded at the end of an inner run,
never by the clock."""

from __future__ import annotations

import json

import pytest

from ._inner import dedent, flags, pyproject

#: Records, as the inner process exits (after the summary and the cache write), the modules
#: loaded: everything the session's end needed has been imported by then.
RECORDER = """
import atexit
import json
import sys


def _record():
    with open("modules.json", "w") as f:
        json.dump(sorted(sys.modules), f)


atexit.register(_record)
"""

LEASES = """
import pytest


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(3))
async def test_lease(mockpool, n):
    async with mockpool.acquire("{service}") as double:
        {body}
"""
BODIES = {
    "database": "assert double.execute('select 1').fetchone() == (1,)",
    "redis": "assert await double.get('k') is None",
}


def _run(pytester: pytest.Pytester, services: str, tests: str, *extra: str) -> list[str]:
    pytester.makefile(
        ".toml",
        pyproject=pyproject(
            asyncio_mode="strict", asyncio_default_fixture_loop_scope="function", mockpool_services=services
        ),
    )
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_it=dedent(tests))
    result = pytester.runpytest_subprocess(*flags("asyncio", *extra))
    result.assert_outcomes(passed=3)
    modules: list[str] = json.loads((pytester.path / "modules.json").read_text())
    return modules


def test_a_pool_of_redis_loads_no_other_fake(pytester: pytest.Pytester) -> None:
    modules = _run(pytester, "redis", LEASES.format(service="redis", body=BODIES["redis"]))
    assert "mockpool.services.redis" in modules
    fakes = [m for m in modules if m.startswith("mockpool.services.") and m != "mockpool.services.redis"]
    assert fakes == ["mockpool.services._common"]
    assert not [m for m in modules if m.split(".")[0] in ("sqlalchemy", "aiosqlite", "jwt")]


def test_a_run_that_does_not_use_the_pool_loads_none_of_it(pytester: pytest.Pytester) -> None:
    tests = """
    import pytest


    @pytest.mark.parametrize("n", range(3))
    def test_plain(n):
        assert n >= 0
    """
    modules = _run(pytester, "redis database", tests)
    # The history is read as pytest is configured (a corrupt cache entry is told even then).
    pool = [m for m in modules if m.startswith("mockpool.") and m.split(".")[1] not in ("plugin", "history")]
    assert pool == ["mockpool._hookspecs", "mockpool.pytest_plugin"]
    assert "numpy" not in modules
