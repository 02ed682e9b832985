"""What a user installs: the wheel's contents, and extras that bring no pytest plugin.

stress/ is a tool of this repository, not part of the package: README runs it from a checkout
(``pip install -e '.[stress]' && python -m stress``), so the stress extra must provide what it
imports, and nothing that would act on every pytest run of a user's venv.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _dist_name(requirement: str) -> str:
    """``"PyJWT[crypto]>=2.8"`` -> ``"pyjwt"`` (PEP 503 normalized)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _extra(name: str) -> set[str]:
    return {_dist_name(r) for r in PROJECT["optional-dependencies"][name]}


def _pytest_plugin_dists() -> set[str]:
    """Installed distributions that register a pytest plugin (entry point group pytest11)."""
    return {
        _dist_name(ep.dist.name)
        for ep in importlib.metadata.entry_points(group="pytest11")
        if ep.dist is not None
    }


@pytest.mark.parametrize("extra", sorted(set(PROJECT["optional-dependencies"]) - {"dev"}))
def test_a_user_extra_brings_no_pytest_plugin(extra: str) -> None:
    """pytest plugins load in every run of the venv they are installed in (pytest-asyncio-
    cooperative in the stress extra did): only the project's own dev extra may bring them."""
    # respx's plugin only offers a ``respx_mock`` fixture and a ``respx`` marker: it changes no
    # run that does not ask for them, and the http double is built on respx.
    plugins = _pytest_plugin_dists() - {"mockpool", "respx"}
    assert "pytest-asyncio-cooperative" in plugins  # the check sees plugins at all (dev venv)
    assert not (_extra(extra) & plugins), f"[{extra}] brings pytest plugins {_extra(extra) & plugins}"
    assert "pytest" not in _extra(extra)


def test_the_stress_extra_provides_what_python_m_stress_imports() -> None:
    modules: set[str] = set()
    for path in (ROOT / "stress").glob("*.py"):
        if path.name in ("conftest.py", "test_stress.py"):  # `pytest stress`: the dev venv
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"mockpool", "stress"}
    providers = importlib.metadata.packages_distributions()
    needed = {_dist_name(providers[module][0]) for module in third_party}
    installed = {_dist_name(r) for r in PROJECT["dependencies"]} | _extra("stress")
    assert needed, "no third-party import found: the scan is broken"
    assert needed <= installed, f"python -m stress imports {needed - installed}, which [stress] lacks"


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_its_entry_points_only(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path,
            ROOT,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mockpool-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        points = archive.read(entry_points).decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"mockpool", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "mockpool/py.typed" in names and "mockpool/pytest_plugin.py" in names
    assert "mockpool/plugin/__init__.py" in names  # the plugin's code, which pytest_plugin imports
    assert "mockpool = mockpool.pytest_plugin" in points
    assert "mockpool.hookspecs = mockpool._hookspecs:Declaration" in points
