"""A lease still held when its test ends fails that test, naming the service and the line."""

from __future__ import annotations

import pytest

from ._inner import Report, conftest, dedent, flags, setup_project

SINGLE = """

def pytest_configure(config):
    pass


from mockpool import ServiceSpec as _Spec


class Single:
    def __init__(self):
        self.value = 0


def _reset_single(single):
    single.value = 0


_register = pytest_mockpool_register


def pytest_mockpool_register(pool, config):
    _register(pool, config)
    pool.register(_Spec(name="single", factory=Single, reset=_reset_single, max_size=1))
"""

LEAKY = """
import pytest


@pytest.mark.asyncio
async def test_leaks(mockpool):
    lease = mockpool.acquire("single")
    single = await lease.__aenter__()  # LEAK LINE
    single.value = 99


@pytest.mark.asyncio
async def test_gets_the_recovered_instance(mockpool):
    # max_size=1: this only gets an instance if the leaked one was taken back.
    async with mockpool.acquire("single", timeout=10) as single:
        assert single.value == 0
    stats = mockpool.stats("single")
    assert stats.leaks == 1
    assert stats.recoveries.total() >= 1
    assert stats.size == 1


@pytest.mark.asyncio
@pytest.mark.mockpool(allow_leak=True)
async def test_allowed_to_leak(mockpool):
    await mockpool.acquire("counter").__aenter__()


def test_sync_beside(mockpool):
    assert mockpool.stats("single").in_use == 0
"""


@pytest.mark.parametrize("scope", ["function", "session"])
def test_leak_fails_the_test_and_the_instance_comes_back(pytester: pytest.Pytester, scope: str) -> None:
    setup_project(
        pytester,
        ini={
            "asyncio_mode": "strict",
            "asyncio_default_fixture_loop_scope": scope,
            "asyncio_default_test_loop_scope": scope,
        },
        probe=False,
    )
    pytester.makeconftest(conftest(probe=False) + SINGLE)
    path = pytester.makepyfile(test_leaky=dedent(LEAKY))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "LEAK LINE" in text)
    result = pytester.runpytest(*flags("asyncio", "--mockpool-report=report.json"))
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_leaky.py::test_leaks ended still holding 1 lease(s)*",
            f"*service 'single', acquired at test_leaky.py:{line}",
        ]
    )
    # The summary names the leak too; the allowed one is not reported.
    result.stdout.fnmatch_lines(
        ["leaked leases (1):", f"*test_leaks: 'single' acquired at test_leaky.py:{line}*"]
    )
    assert [
        leak["service"] for leak in Report.read(pytester.path / "report.json").data["pytest"]["leaks"]
    ] == ["single"]


def test_leak_warn_mode(pytester: pytest.Pytester) -> None:
    setup_project(
        pytester,
        ini={"asyncio_default_fixture_loop_scope": "function", "mockpool_leaks": "warn"},
        probe=False,
    )
    pytester.makepyfile(
        test_leaky=dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_leaks(mockpool):
                await mockpool.acquire("counter").__aenter__()
            """
        )
    )
    result = pytester.runpytest(
        *flags("asyncio", "-W", "default::mockpool.pytest_plugin.MockPoolLeakWarning")
    )
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*MockPoolLeakWarning: mockpool: test_leaky.py::test_leaks ended still holding*",
            "*service 'counter', acquired at test_leaky.py:5",
        ]
    )
