"""``import mockpool`` stays light: heavy modules load when first used."""

from __future__ import annotations

import subprocess
import sys

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
