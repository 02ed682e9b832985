"""How the plugin plugs into pytest: entry point, light import, options, hookspec, markers."""

from __future__ import annotations

import importlib
import importlib.metadata
import pickle
import pkgutil
import re
import subprocess
import sys

import pytest

from ._inner import BASE_FLAGS, dedent, flags, setup_project


def test_entry_points_name_the_plugin_and_the_hook_declaration() -> None:
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert points.get("mockpool") == "mockpool.pytest_plugin"
    assert points.get("mockpool.hookspecs") == "mockpool._hookspecs:Declaration"


def test_importing_the_plugin_imports_no_fake() -> None:
    code = (
        "import sys, mockpool.pytest_plugin\n"
        "heavy = [m for m in ('fakeredis', 'redis', 'httpx', 'jwt', 'sqlalchemy', 'aiosqlite',"
        " 'mockpool.services') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pytest_registers_the_plugin_module_once_and_finds_every_hook_on_it(
    pytestconfig: pytest.Config,
) -> None:
    """The code is in the package mockpool.plugin; pytest registers mockpool.pytest_plugin only
    and finds hooks by name on it. A hook defined in the package but not bound there would
    never run; a package module registered as a plugin would run its hooks twice."""
    import mockpool.plugin
    import mockpool.pytest_plugin as registered
    from mockpool.plugin import fixtures

    pm = pytestconfig.pluginmanager
    names = {getattr(plugin, "__name__", None) for plugin in pm.get_plugins()}
    assert {n for n in names if isinstance(n, str) and n.startswith("mockpool.")} == {
        "mockpool.pytest_plugin"
    }
    hooks = 0
    for info in pkgutil.iter_modules(mockpool.plugin.__path__):
        module = importlib.import_module(f"mockpool.plugin.{info.name}")
        for name, obj in vars(module).items():
            if name.startswith("pytest_") and getattr(obj, "__module__", None) == module.__name__:
                hooks += 1
                assert getattr(registered, name, None) is obj, f"{module.__name__}.{name} is not bound"
                impls = getattr(pm.hook, name).get_hookimpls()
                assert sum(impl.function is obj for impl in impls) == 1, name
    assert hooks == 17
    assert registered.mockpool is fixtures.mockpool


def test_the_leak_warning_keeps_its_public_module() -> None:
    """Defined in mockpool.plugin.leaks, named by users as mockpool.pytest_plugin's (-W, xdist
    sends warnings by module and name, pickle)."""
    from mockpool.pytest_plugin import MockPoolLeakWarning

    name = f"{MockPoolLeakWarning.__module__}.{MockPoolLeakWarning.__qualname__}"
    assert name == "mockpool.pytest_plugin.MockPoolLeakWarning"
    assert pickle.loads(pickle.dumps(MockPoolLeakWarning("x"))).args == ("x",)


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
        # NaN passed every comparison and failed later, as an INTERNALERROR traceback.
        (
            "mockpool_acquire_timeout",
            "nan",
            "*mockpool_acquire_timeout = 'nan': use a number of seconds > 0*",
        ),
        # pytest's own message named no option: "invalid truth value 'maybe'".
        ("mockpool_history", "maybe", "*mockpool_history: invalid truth value 'maybe'; use true or false*"),
        (
            "mockpool_fix_cooperative_wait",
            "perhaps",
            "*mockpool_fix_cooperative_wait: *'perhaps'; use true or false*",
        ),
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


# -- -p no:mockpool and optionalhook -----------------------------------------------------------

RAISING_HOOK = """
import pytest

{decorator}
def pytest_mockpool_register(pool, config):
    raise AssertionError("the hook ran although mockpool is off")
"""


def test_p_no_mockpool_leaves_a_conftest_implementing_the_hook_loading(pytester: pytest.Pytester) -> None:
    """``-p no:mockpool`` used to stop with INTERNALERROR "unknown hook": the hookspec has
    its own entry point, so the hook stays known, and is never called."""
    pytester.makeconftest(RAISING_HOOK.format(decorator=""))
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio", "-p", "no:mockpool"))
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_optionalhook_for_a_conftest_where_mockpool_is_not_installed(pytester: pytest.Pytester) -> None:
    """Both of mockpool's plugins off stands for mockpool not installed: pluggy rejects a plain
    implementation of an unknown hook, and accepts one marked optionalhook."""
    absent = ("-p", "no:asyncio", "-p", "no:mockpool", "-p", "no:mockpool.hookspecs")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.makeconftest(RAISING_HOOK.format(decorator=""))
    plain = pytester.runpytest(*flags("asyncio", *absent))
    assert plain.ret == pytest.ExitCode.INTERNAL_ERROR
    plain.stdout.fnmatch_lines(["*unknown hook 'pytest_mockpool_register'*"])
    pytester.makeconftest(RAISING_HOOK.format(decorator="@pytest.hookimpl(optionalhook=True)"))
    optional = pytester.runpytest(*flags("asyncio", *absent))
    optional.assert_outcomes(passed=1)


def test_an_optionalhook_implementation_still_registers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        dedent(
            """
            import pytest
            from mockpool import ServiceSpec

            @pytest.hookimpl(optionalhook=True)
            def pytest_mockpool_register(pool, config):
                pool.register(ServiceSpec(name="box", factory=list))
            """
        )
    )
    pytester.makepyfile(test_x="def test_x(mockpool):\n    assert mockpool.services == ('box',)\n")
    pytester.runpytest(*flags("asyncio", "-p", "no:asyncio")).assert_outcomes(passed=1)


# -- the marker's names ------------------------------------------------------------------------


def test_a_marker_naming_an_unknown_service_fails_with_a_suggestion(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nmockpool_services = "redis database"\n')
    pytester.makepyfile(
        test_marks=dedent(
            """
            import pytest

            @pytest.mark.mockpool("databse")
            def test_typo(mockpool):
                pass

            @pytest.mark.mockpool("redis", allow_leaks=True)
            def test_keyword_typo(mockpool):
                pass

            @pytest.mark.mockpool("redis", "database", allow_leak=True)
            def test_right(mockpool):
                pass
            """
        )
    )
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio"))
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.mockpool('databse'): no service named 'databse' in pool 'pytest'; did you*mean 'database'?*",
            "*@pytest.mark.mockpool('redis', allow_leaks=True): unknown keyword 'allow_leaks'*",
        ]
    )
    result.stdout.no_fnmatch_line("*pytest_plugin.py*")
    result.stdout.no_fnmatch_line(r"*mockpool[/\\]plugin[/\\]*")  # the plugin's package


# -- a registration error: once, as a usage error ----------------------------------------------

BAD_REGISTRATION = """
from mockpool import ServiceSpec


class Plex:
    pass


def pytest_mockpool_register(pool, config):
    pool.register(ServiceSpec(name="plex", factory=Plex, max_size=0))
"""


def test_a_registration_error_is_one_usage_error_without_mockpool_frames(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(BAD_REGISTRATION)
    pytester.makepyfile(
        test_many="\n\n".join(f"def test_{i}(mockpool):\n    pass" for i in range(5)) + "\n",
        test_other="def test_plain():\n    pass\n",
    )
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = (
        "ERROR: mockpool: pytest_mockpool_register failed at conftest.py:9: "
        "ServiceConfigError: service 'plex': max_size=0 must be >= 1"
    )
    result.stderr.fnmatch_lines([expected])
    output = result.stdout.str() + result.stderr.str()
    assert output.count("max_size=0") == 1
    assert "spec.py" not in output and "pytest_plugin.py" not in output
    assert not re.search(r"mockpool[/\\]plugin[/\\]", output)  # the plugin's package


def test_a_missing_extra_of_a_built_in_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nmockpool_services = "http"\n')
    pytester.makeconftest("import sys\n\nsys.modules['httpx'] = None  # as if httpx were not installed\n")
    pytester.makepyfile(test_x="def test_x(mockpool):\n    pass\n")
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: mockpool: registering mockpool_services = http failed: MissingExtraError: *'mockpool?http?'"]
    )


# -- the mockpool line: only where mockpool is used, naming the runners that run its tests -----

#: pytest-asyncio and anyio's plugin both on, as in a venv with mockpool (anyio comes with it).
ASYNCIO_INI = '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
BOTH_RUNNERS = (*BASE_FLAGS, "-p", "no:asyncio-cooperative", "-p", "no:xdist")


def test_no_mockpool_line_in_a_project_that_does_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(ASYNCIO_INI)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*BOTH_RUNNERS)
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("mockpool:*")


def test_the_mockpool_line_names_the_runners_of_the_tests_that_use_the_pool(
    pytester: pytest.Pytester,
) -> None:
    """No service configured and no hook: the fixture alone makes a project a mockpool user.
    anyio's plugin is named only once a test it runs uses the pool."""
    pytester.makepyprojecttoml(ASYNCIO_INI)
    # anyio's tests on the asyncio backend only (trio would double them).
    pytester.makeconftest("import pytest\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n")
    pytester.makepyfile(
        test_asyncio=dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_a(mockpool):
                pass

            @pytest.mark.anyio
            async def test_b():
                pass
            """
        )
    )
    result = pytester.runpytest(*BOTH_RUNNERS)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["mockpool: services: none yet; runner: pytest-asyncio (strict, function loop); no xdist"]
    )
    pytester.makepyfile(
        test_anyio=dedent(
            """
            import pytest

            @pytest.mark.anyio
            async def test_c(mockpool):
                pass
            """
        )
    )
    result = pytester.runpytest(*BOTH_RUNNERS)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["mockpool: *; runner: pytest-asyncio (strict, function loop) + anyio; no xdist"]
    )


def test_async_with_the_session_pool_in_a_test_is_refused_and_the_pool_stays_open(
    pytester: pytest.Pytester,
) -> None:
    """Leaving the block closed the session's pool: the test passed, and every later test
    failed with PoolClosedError, whose advice ('acquire inside async with pool:') led back."""
    pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\nmockpool_services = "database"\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
    )
    pytester.makepyfile(
        test_x=dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_enters_the_pool(mockpool):
                async with mockpool:
                    pass

            @pytest.mark.asyncio
            async def test_later(mockpool):
                async with mockpool.acquire("database") as db:
                    assert db.execute("select 1").fetchone() == (1,)
            """
        )
    )
    result = pytester.runpytest(*flags("asyncio"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*MockPoolError: pool 'pytest' is started and closed by the mockpool pytest plugin*"]
    )


# -- ini options: isolation_verify, options of the built-in services ---------------------------


def test_isolation_verify_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\nmockpool_isolation_verify = true\n")
    pytester.makepyfile(test_x="def test_x(mockpool):\n    assert mockpool.isolation_verify is True\n")
    pytester.runpytest(*flags("asyncio", "-p", "no:asyncio")).assert_outcomes(passed=1)
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    pytester.makepyfile(test_x="def test_x(mockpool):\n    assert mockpool.isolation_verify is False\n")
    pytester.runpytest(*flags("asyncio", "-p", "no:asyncio")).assert_outcomes(passed=1)


def test_options_of_built_in_services_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        dedent(
            """
            [pytest]
            asyncio_default_fixture_loop_scope = function
            mockpool_services = redis database
            mockpool_service_options =
                redis.decode_responses = true
                redis.max_size = 3
                redis.version = 6.2
                database.acquire_timeout = 2.5
            """
        )
    )
    pytester.makepyfile(
        test_opts=dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_options(mockpool):
                async with mockpool.acquire("redis") as redis:
                    await redis.set("k", "v")
                    assert await redis.get("k") == "v"          # str: decode_responses
                assert mockpool.stats("redis").max_size == 3
                assert mockpool.service_pools["database"].spec.acquire_timeout == 2.5
            """
        )
    )
    pytester.runpytest(*flags("asyncio")).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("redis.decode_responses = maybe", "*redis.decode_responses = maybe: expected true or false"),
        ("redis.max_size = many", "*redis.max_size = many: expected a whole number"),
        (
            "redis.decode_response = true",
            "*redis_service() has no option 'decode_response'; did you mean 'decode_responses'?*",
        ),
        ("redis.seed = {}", "*'seed' takes a Python object*register the service yourself*"),
        (
            "jwt.secret = test",
            "*sets an option of 'jwt', which mockpool_services does not enable (redis); add it there",
        ),
        ("redis decode_responses", "*'redis decode_responses' is not SERVICE.OPTION = VALUE*"),
        ("mongo.url = x", "*names 'mongo', which is not a built-in service*"),
    ],
)
def test_a_bad_service_option_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, line: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\nmockpool_services = redis\nmockpool_service_options =\n    {line}\n")
    pytester.makepyfile(test_x="def test_x(mockpool):\n    pass\n")
    result = pytester.runpytest(*flags("asyncio", "-p", "no:asyncio"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
