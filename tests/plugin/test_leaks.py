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


NESTED = """
import pytest


@pytest.mark.asyncio
async def test_nested(mockpool):
    async with mockpool.acquire("single"):  # OUTER LINE
        async with mockpool.acquire("single", timeout=0.05):
            pass
"""


def test_a_lease_nested_in_its_own_service_times_out_saying_the_test_waits_for_itself(
    pytester: pytest.Pytester,
) -> None:
    """max_size=1 and a second acquire inside the first: no release can come. The timeout said
    'raise max_size, pass a longer timeout=, or look for tests that hold leases too long', and a
    longer timeout only waits longer."""
    setup_project(
        pytester,
        ini={"asyncio_mode": "strict", "asyncio_default_fixture_loop_scope": "function"},
        probe=False,
    )
    pytester.makeconftest(conftest(probe=False) + SINGLE)
    path = pytester.makepyfile(test_nested=dedent(NESTED))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "OUTER LINE" in text)
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(failed=1)
    expected = (
        "*AcquireTimeout: no 'single' instance became available within 0.05 s (size=1, in_use=1*"
        f"this test holds all 1 of them itself, the first acquired at *test_nested.py:{line}: an "
        "acquire nested in a lease of the same service waits for the test's own lease*"
    )
    result.stdout.fnmatch_lines([expected])


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


HIDDEN = """
import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def leaky(mockpool):
    lease = mockpool.acquire("counter")
    yield await lease.__aenter__()


@pytest.mark.asyncio
async def test_skips_while_leaking(mockpool):
    await mockpool.acquire("counter").__aenter__()
    pytest.skip("not here")


@pytest.mark.asyncio
async def test_xfails_while_leaking(mockpool):
    await mockpool.acquire("counter").__aenter__()
    pytest.xfail("known bug")


@pytest.mark.asyncio
@pytest.mark.xfail(reason="flaky")
async def test_marked_xfail_passes_but_leaks(mockpool):
    await mockpool.acquire("counter").__aenter__()


@pytest.mark.asyncio
@pytest.mark.xfail(reason="flaky")
async def test_marked_xfail_fixture_leaks(leaky):
    pass


@pytest.mark.asyncio
async def test_plain_leak_still_fails(mockpool):
    await mockpool.acquire("counter").__aenter__()
"""


def test_a_leak_is_an_error_where_skip_or_xfail_would_hide_it(pytester: pytest.Pytester) -> None:
    """A skip keeps a leak in a note shown only with -rs; an xfail mark took the leak's
    failure for the expected one (an XPASS read as XFAIL). The leak is an error at teardown
    now, beside the test's own outcome; a test without either still fails."""
    setup_project(pytester, ini={"asyncio_default_fixture_loop_scope": "function"}, probe=False)
    pytester.makepyfile(test_hidden=dedent(HIDDEN))
    result = pytester.runpytest(*flags("asyncio", "--mockpool-report=report.json"))
    result.assert_outcomes(skipped=1, xfailed=1, xpassed=2, failed=1, errors=4)
    for test, where in (
        ("test_skips_while_leaking", "its body"),
        ("test_xfails_while_leaking", "its body"),
        ("test_marked_xfail_passes_but_leaks", "its body"),
        ("test_marked_xfail_fixture_leaks", "its fixtures or a task it started"),
    ):
        result.stdout.fnmatch_lines(
            [
                f"*ERROR at teardown of {test}*",
                f"mockpool: test_hidden.py::{test} ended still holding 1 lease(s) taken in {where}:",
            ]
        )
    result.stdout.fnmatch_lines(["FAILED test_hidden.py::test_plain_leak_still_fails - *"])
    assert len(Report.read(pytester.path / "report.json").data["pytest"]["leaks"]) == 5


ALLOWED = """
import pytest


@pytest.mark.asyncio
@pytest.mark.mockpool(allow_leak=True)
async def test_keeps_it(mockpool):
    await mockpool.acquire("counter").__aenter__()


@pytest.mark.asyncio
async def test_leaks(mockpool):
    await mockpool.acquire("single").__aenter__()
"""


def test_an_allowed_lease_is_neither_counted_nor_listed_as_a_leak(pytester: pytest.Pytester) -> None:
    """The summary's leaks column, the report's per-service leaks and the leak list count the
    same leases: a lease kept under allow_leak=True is in none of them (it was counted in the
    column at the session's end, when its instance was taken back)."""
    setup_project(pytester, ini={"asyncio_default_fixture_loop_scope": "function"}, probe=False)
    pytester.makeconftest(conftest(probe=False) + SINGLE)
    pytester.makepyfile(test_allowed=dedent(ALLOWED))
    result = pytester.runpytest(*flags("asyncio", "--mockpool-report=report.json"))
    result.assert_outcomes(passed=1, failed=1)
    rows = {
        line.split()[0]: line.split()
        for line in result.stdout.lines
        if line.startswith(("counter ", "single "))
    }
    assert rows["counter"][8] == "0"  # the leaks column
    assert rows["single"][8] == "1"
    report = Report.read(pytester.path / "report.json")
    assert report.service("counter")["leaks"] == 0
    assert report.service("single")["leaks"] == 1
    assert [leak["test"] for leak in report.data["pytest"]["leaks"]] == ["test_allowed.py::test_leaks"]
    result.stdout.fnmatch_lines(["leaked leases (1):"])


REPEATED = """
import pytest


@pytest.mark.asyncio
async def test_leaks_in_a_loop(mockpool):
    for _ in range(3):
        await mockpool.acquire("counter").__aenter__()
"""


def test_the_summary_lists_a_repeated_leak_once_with_its_count(pytester: pytest.Pytester) -> None:
    setup_project(pytester, ini={"asyncio_default_fixture_loop_scope": "function"}, probe=False)
    pytester.makepyfile(test_repeated=dedent(REPEATED))
    result = pytester.runpytest(*flags("asyncio", "--mockpool-report=report.json"))
    result.assert_outcomes(failed=1)
    start = result.stdout.lines.index("leaked leases (3):")
    assert result.stdout.lines[start + 1] == (
        "  test_repeated.py::test_leaks_in_a_loop: 'counter' acquired at test_repeated.py:7 (call), 3 times"
    )
    assert not result.stdout.lines[start + 2].startswith("  test_repeated.py")
    # The report keeps one entry per leak: as many as the leaks column counts.
    report = Report.read(pytester.path / "report.json")
    assert len(report.data["pytest"]["leaks"]) == report.service("counter")["leaks"] == 3
