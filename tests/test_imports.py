"""``import mockpool`` stays light: heavy modules load when first used."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Modules that cost tens of milliseconds to import and that ``import mockpool`` does not need:
#: numpy (percentiles, history), unittest (the stub recovery tier), psutil (the
#: memory budget, read by the scaling supervisor).
HEAVY = ("numpy", "unittest", "psutil")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded: list[str] = eval(out.stdout)  # a list literal printed by the probe
    return loaded


def test_import_mockpool_loads_no_heavy_module() -> None:
    assert _loaded_after("import mockpool") == []


def test_the_built_in_fakes_do_not_load_numpy() -> None:
    # mockpool.services needs unittest (autospec_service), not numpy.
    assert "numpy" not in _loaded_after("import mockpool.services")


def test_making_a_pool_loads_none_either() -> None:
    code = (
        "from mockpool import MockPool, ServiceSpec\n"
        "pool = MockPool()\n"
        "pool.register(ServiceSpec(name='svc', factory=object))\n"
    )
    assert _loaded_after(code) == []


def _modules_after(code: str, prefix: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.startswith({prefix!r})))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded: list[str] = eval(out.stdout)  # a list literal printed by the probe
    return loaded


def test_loading_the_pytest_plugin_loads_none_of_the_pool() -> None:
    # pytest loads the plugin in every process, the xdist controller and projects that never
    # use the pool included: the pool's modules (about 25 ms) load when a pool is made.
    loaded = _modules_after("import mockpool.pytest_plugin", "mockpool")
    assert [m for m in loaded if not m.startswith("mockpool.plugin")] == [
        "mockpool",
        "mockpool.pytest_plugin",
    ]


def test_the_public_names_load_on_first_use() -> None:
    import mockpool
    import mockpool.services

    for package in (mockpool, mockpool.services):
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            value = getattr(package, name)
            module = getattr(value, "__module__", None)
            assert module is None or module.startswith(package.__name__), (name, module)
    assert mockpool.pool.MockPool is mockpool.MockPool  # submodules stay reachable as attributes
    assert mockpool.services.sql.sql_service is mockpool.services.sql_service


def test_an_unknown_name_is_an_attribute_error() -> None:
    import mockpool
    import mockpool.services

    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        mockpool.Nothing  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        mockpool.services.nothing  # noqa: B018


def test_a_pool_of_redis_loads_no_other_fake() -> None:
    code = (
        "from mockpool import MockPool\n"
        "from mockpool.services import redis_service\n"
        "MockPool().register(redis_service())\n"
    )
    loaded = _modules_after(code, "mockpool.services")
    assert loaded == ["mockpool.services", "mockpool.services._common", "mockpool.services.redis"]


def test_a_lazy_name_follows_its_module_when_it_is_imported_anew() -> None:
    """pytester's in-process runs restore ``sys.modules`` after each run, so a module the run
    imported is imported anew by the next: ``from mockpool import ServiceSpec`` must give the
    class the pool's modules use then, not the one the first run imported (register() refused
    the conftest's spec as "not a ServiceSpec")."""
    probe = """
import sys
import mockpool
import mockpool.services
before = set(sys.modules)
from mockpool import MockPool, ServiceSpec
from mockpool.services import redis_service
for name in set(sys.modules) - before:
    if name.startswith("mockpool."):
        del sys.modules[name]
from mockpool import MockPool, ServiceSpec
from mockpool.services import redis_service
import mockpool.spec
import mockpool.services.redis
assert ServiceSpec is mockpool.spec.ServiceSpec
assert redis_service is mockpool.services.redis.redis_service
MockPool().register(ServiceSpec(name="s", factory=list))
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
