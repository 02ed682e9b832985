"""Cached virtual environments with other pytest / pytest-asyncio versions than the dev venv.

The plugin must work with the versions users have, not only with the dev pins. A test that
needs, say, pytest 7.4 with pytest-asyncio 0.23 asks for ``Venv.get(spec)``: it builds (once)
a venv with those versions, mockpool's runtime dependencies pinned to the versions installed
here (so pip takes them from its cache and the only difference is the runner), and mockpool
itself installed editable from this checkout (``--no-deps``), so its ``pytest11`` entry point
is registered as for a user.

Venvs are kept under ``$MOCKPOOL_VENV_CACHE`` or ``~/.cache/mockpool-test-venvs/`` in a
directory named after the version set and a hash of everything that goes into it (Python,
requirements, checkout path); a marker file written after the last install step says it is
complete, so a later run reuses it at once. A file lock serializes builds across xdist workers.

Without a network the build fails: the test is then skipped with pip's reason, unless ``CI`` is
set (there it must run, and fails instead).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

#: This checkout (the directory holding pyproject.toml).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Extras of mockpool whose dependencies the inner suites need (the ``redis`` built-in).
EXTRAS = ("redis",)

MARKER = ".mockpool-venv-complete"
BUILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class VenvSpec:
    """A set of test-runner versions, e.g. ``VenvSpec("pytest74-pa023", ("pytest==7.4.*", ...))``."""

    name: str
    runners: tuple[str, ...]


def runtime_requirements() -> tuple[str, ...]:
    """mockpool's dependencies (and those of ``EXTRAS``), pinned to the versions installed in
    the running environment."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    raw = list(project["dependencies"])
    for extra in EXTRAS:
        raw += project["optional-dependencies"][extra]
    names = dict.fromkeys(Requirement(r).name for r in raw)
    return tuple(f"{name}=={importlib.metadata.version(name)}" for name in names)


def cache_root() -> Path:
    configured = os.environ.get("MOCKPOOL_VENV_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "mockpool-test-venvs"


@dataclass(frozen=True)
class Venv:
    """A built venv: its directory, its python, and how long getting it took."""

    path: Path
    built: bool
    seconds: float

    @property
    def python(self) -> Path:
        sub = "Scripts/python.exe" if sys.platform == "win32" else "bin/python"
        return self.path / sub

    @classmethod
    def get(cls, spec: VenvSpec, root: Path | None = None) -> Venv:
        """The venv for ``spec``, built if not cached; skips the test when it cannot be built
        for want of a network (outside CI)."""
        requirements = (*spec.runners, *runtime_requirements())
        key = json.dumps([sys.version, sys.platform, str(REPO_ROOT), requirements])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        root = root or cache_root()
        path = root / f"{spec.name}-{digest}"
        start = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f"{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be building it
            if (path / MARKER).is_file():
                return cls(path, built=False, seconds=time.perf_counter() - start)
            _build(path, requirements)
            (path / MARKER).write_text(json.dumps(requirements, indent=1) + "\n", encoding="utf-8")
        return cls(path, built=True, seconds=time.perf_counter() - start)


def _build(path: Path, requirements: tuple[str, ...]) -> None:
    shutil.rmtree(path, ignore_errors=True)  # an earlier build that did not finish
    if _pip_can_target_another_python():
        # Fast path: no pip inside the new venv (ensurepip costs seconds); this
        # environment's pip installs into it.
        _run([sys.executable, "-m", "venv", "--without-pip", str(path)])
        pip = [sys.executable, "-m", "pip", "--python", str(Venv(path, False, 0).python)]
    else:
        _run([sys.executable, "-m", "venv", str(path)])
        pip = [str(Venv(path, False, 0).python), "-m", "pip"]
    pip += ["--disable-pip-version-check", "install", "--quiet"]
    _run([*pip, *requirements])
    _run([*pip, "--no-deps", "--editable", str(REPO_ROOT)])


def _pip_can_target_another_python() -> bool:
    """``pip --python`` exists from pip 22.3."""
    if importlib.util.find_spec("pip") is None:
        return False
    major, minor = (int(part) for part in importlib.metadata.version("pip").split(".")[:2])
    return (major, minor) >= (22, 3)


def _run(cmd: list[str]) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        _unavailable(f"{' '.join(cmd[:4])}... timed out after {exc.timeout:.0f}s")
        raise  # pragma: no cover - _unavailable raises
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        reason = f"{' '.join(cmd)} exited with {done.returncode}:\n{tail}"
        if _index_reachable():
            pytest.fail(f"building a test venv failed although the package index is reachable: {reason}")
        _unavailable(reason)


def _index_reachable(host: str = "pypi.org") -> bool:
    try:
        with socket.create_connection((host, 443), timeout=5):
            return True
    except OSError:
        return False


def _unavailable(reason: str) -> None:
    message = f"cannot build a test venv (no network?): {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + "\n(CI is set: these runner tests must run there)", pytrace=False)
    pytest.skip(message)
