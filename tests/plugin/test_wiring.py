"""How the plugin plugs into pytest: entry point, light import, options, hookspec, markers."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from ._inner import dedent, flags, setup_project


def test_entry_point_names_the_plugin_module() -> None:
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert points.get("mockpool") == "mockpool.pytest_plugin"


def test_importing_the_plugin_imports_no_fake() -> None:
    code = (
        "import sys, mockpool.pytest_plugin\n"
        "heavy = [m for m in ('fakeredis', 'redis', 'httpx', 'jwt', 'sqlalchemy', 'aiosqlite',"
        " 'mockpool.services') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ini_options_from_pyproject_and_hookspec(pytester: pytest.Pytester) -> None:
    setup_project(
        pytester,
        ini={
            "mockpool_services": "redis database",
            "mockpool_acquire_timeout": "0.25",
            "mockpool_max_total": "7",
            "mockpool_max_size": "3",
        },
        probe=False,
    )
    pytester.makepyfile(
        test_opts=dedent(
            """
            def test_options(mockpool, pytestconfig):
                assert mockpool.services == ("redis", "database", "counter")
                assert mockpool.default_timeout == 0.25
                assert mockpool.budget.max_total == 7
                assert mockpool.stats("redis").max_size == 3
                assert pytestconfig.pluginmanager.hook.pytest_mockpool_register.spec is not None
            """
        )
    )
    result = pytester.runpytest(*flags("asyncio", "--strict-config", "-p", "no:asyncio"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["mockpool: services: redis database + pytest_mockpool_register; *; no xdist"]
    )


def test_hookimpl_with_a_wrong_argument_is_rejected(pytester: pytest.Pytester) -> None:
    """The hook is a registered hookspec: pluggy checks implementations against it."""
    pytester.makeconftest("def pytest_mockpool_register(pool, config, extra):\n    pass\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio"))
    assert result.ret != pytest.ExitCode.OK
    result.stderr.fnmatch_lines(["*pytest_mockpool_register*extra*"])


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("mockpool_acquire_timeout", "soon", "*mockpool_acquire_timeout = 'soon'*"),
        ("mockpool_max_total", "0", "*mockpool_max_total = '0'*"),
        ("mockpool_services", "redis mongo", "*unknown built-in service 'mongo'*"),
        ("mockpool_leaks", "maybe", "*mockpool_leaks = 'maybe'*"),
    ],
)
def test_bad_option_is_a_usage_error(
    pytester: pytest.Pytester, option: str, value: str, message: str
) -> None:
    pytester.makepyprojecttoml(f'[tool.pytest.ini_options]\n{option} = "{value}"\n')
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked=dedent(
            """
            import pytest

            @pytest.mark.mockpool("redis")
            def test_marked():
                pass
            """
        )
    )
    result = pytester.runpytest(*flags("asyncio", "--strict-markers", "-p", "no:asyncio"))
    result.assert_outcomes(passed=1)
    markers = pytester.runpytest(*flags("asyncio", "--markers", "-p", "no:asyncio"))
    markers.stdout.fnmatch_lines(["@pytest.mark.mockpool(*services, allow_leak=False):*"])


def test_no_pool_without_the_fixture(pytester: pytest.Pytester) -> None:
    """Tests that never request ``mockpool`` cost nothing: no pool, no summary section."""
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio"))
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*= mockpool =*")


def test_disabled_with_p_no(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(mockpool):\n    pass\n")
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio", "-p", "no:mockpool"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'mockpool' not found*"])
