"""The pytest plugin (entry point ``pytest11: mockpool``).

Tests request the session-scoped, synchronous ``mockpool`` fixture and write
``async with mockpool.acquire("redis") as redis:``. The plugin builds the pool on first use
(built-ins named in ``mockpool_services``, then ``pytest_mockpool_register`` hooks), warms it
from the history kept in pytest's cache, attributes leases to tests, fails tests that leak a
lease, prints a ``mockpool`` summary and, under xdist, merges what the workers report.

How a test's leases are attributed to it (``Lease.owner``, the ``lease_owner`` ContextVar):

* The test body: around ``pytest_runtest_call`` the plugin sets ``lease_owner`` and swaps the
  item's coroutine function for a wrapper that sets it again *inside* the coroutine, so it
  holds whichever task runs the test (pytest-asyncio copies the caller's context; anyio runs
  tests in a long-lived runner task that the caller's context never reaches).
* pytest-asyncio-cooperative calls ``item.function`` itself, in one task per test, all in
  one loop: the plugin replaces the function at collection by a function-like object with
  the same ``__code__`` (cooperative reads the fixture names from it) whose call sets the
  owner in that task.
* Function-scoped fixtures: the owner is set around ``pytest_fixture_setup``; async fixtures
  see it where the runner copies the caller's context (pytest-asyncio).

Event loops: the pool's state is loop-agnostic; its runtime (waiter futures, background
creations, supervisors) is per loop. At the start of each test's coroutine, in the test's loop,
the wrapper above starts that loop's runtime and waits until the supervisors are up (a runtime
cancelled mid-start hangs ``asyncio.Runner.close`` with anyio 4.16), then asks the pool for
what this test and the next collected one will acquire (``pool.expect``). The runtime ends
when the runner closes the loop. Cost and trade-offs: docs/pytest.md.

pytest-asyncio-cooperative replaces a session fixture's function by an async caching wrapper,
which would give sync tests a coroutine; ``pytest_fixture_setup`` restores the ``mockpool``
fixture's own function.

Leaks are found per runner: sequential runners (plain pytest, pytest-asyncio, anyio) compare
the held leases with those held before the test (so leases of session/module fixtures never
count), cooperative ones select the leases whose owner is the test.

Importing this module imports nothing but pytest and the standard library; the pool, the
history and the built-in fakes are imported when first needed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    from .history import History
    from .lease import Lease
    from .pool import MockPool

__all__ = ("BUILTIN_SERVICES", "MockPoolLeakWarning", "mockpool")

#: Built-in services that ``mockpool_services`` enables by name (``mockpool.services``).
BUILTIN_SERVICES = ("redis", "database", "jwt", "http", "device_session")
_DEVICE_SESSION_MEMBERS = ("redis", "jwt", "database")

#: pytest cache key of the usage history (``pytest --cache-show 'mockpool/*'``).
HISTORY_KEY = "mockpool/history"

_LeakMode = Literal["fail", "warn", "off"]
_LEAK_MODES: tuple[_LeakMode, ...] = ("fail", "warn", "off")


class MockPoolLeakWarning(pytest.PytestWarning):
    """A test ended while holding a lease (``mockpool_leaks = warn``)."""


# == configuration ==============================================================================


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # Also declared by the entry point mockpool.hookspecs (see _hookspecs): whichever loads.
    from ._hookspecs import declare

    declare(pluginmanager)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mockpool", "mockpool: pooled, pre-warmed async test doubles")
    group.addoption(
        "--mockpool-report",
        metavar="PATH",
        default=None,
        help="write the pool's JSON report to PATH at the end of the run (overrides mockpool_report)",
    )
    group.addoption(
        "--mockpool-leaks",
        choices=_LEAK_MODES,
        default=None,
        help="what a lease still held when its test ends does: fail (default), warn, off",
    )
    parser.addini(
        "mockpool_services",
        "built-in services to register, by name: " + " ".join(BUILTIN_SERVICES),
        type="args",
        default=[],
    )
    parser.addini(
        "mockpool_acquire_timeout", "default acquire wait bound in seconds, or 'none' (30)", default="30"
    )
    parser.addini(
        "mockpool_max_total",
        "bound on live instances across all services and xdist workers (divided among workers); "
        "'none' for no bound",
        default="none",
    )
    parser.addini(
        "mockpool_max_size",
        "bound on live instances of each built-in service across xdist workers (default: the service's own)",
        default="none",
    )
    parser.addini(
        "mockpool_history",
        "learn from earlier runs (kept in pytest's cache under mockpool/)",
        type="bool",
        default=True,
    )
    parser.addini(
        "mockpool_warm",
        "pre-create what history and @pytest.mark.mockpool say the tests need, ahead of them",
        type="bool",
        default=True,
    )
    parser.addini(
        "mockpool_supervise", "run the pool's supervisors in each test's loop", type="bool", default=True
    )
    parser.addini("mockpool_leaks", "lease held past its test: fail, warn or off", default="fail")
    parser.addini(
        "mockpool_report", "write the JSON report to this path (relative to the ini file)", default=""
    )
    parser.addini(
        "mockpool_summary", "print the mockpool section of the terminal summary", type="bool", default=True
    )
    parser.addini(
        "mockpool_isolation_verify",
        "after each reset, compare the instance's snapshot with its pristine one and fail the test "
        "that left state behind (slower: for finding a leaky reset)",
        type="bool",
        default=False,
    )
    parser.addini(
        "mockpool_service_options",
        "options of the built-in services, one per line: SERVICE.OPTION = VALUE "
        "(e.g. redis.decode_responses = true)",
        type="linelist",
        default=[],
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    services: tuple[str, ...]
    acquire_timeout: float | None
    max_total: int | None
    max_size: int | None
    history: bool
    warm: bool
    supervise: bool
    leaks: _LeakMode
    report: Path | None
    summary: bool
    isolation_verify: bool
    #: ``mockpool_service_options``: per built-in service, option name -> the raw ini value.
    service_options: Mapping[str, Mapping[str, str]]

    @staticmethod
    def read(config: pytest.Config) -> _Settings:
        services = tuple(str(s) for s in config.getini("mockpool_services"))
        unknown = [s for s in services if s not in BUILTIN_SERVICES]
        if unknown:
            raise pytest.UsageError(
                f"mockpool_services: unknown built-in service {', '.join(map(repr, unknown))}; the "
                f"built-ins are {', '.join(BUILTIN_SERVICES)}. Register your own services with "
                "the pytest_mockpool_register(pool, config) hook in a conftest.py"
            )
        leaks = config.getoption("mockpool_leaks") or str(config.getini("mockpool_leaks")).strip().lower()
        if leaks not in _LEAK_MODES:
            raise pytest.UsageError(f"mockpool_leaks = {leaks!r}: use one of {', '.join(_LEAK_MODES)}")
        report: Path | None = None
        if cli_report := config.getoption("mockpool_report"):
            report = config.invocation_params.dir / cli_report
        elif ini_report := str(config.getini("mockpool_report")).strip():
            base = config.inipath.parent if config.inipath is not None else config.rootpath
            report = base / ini_report
        return _Settings(
            services=services,
            acquire_timeout=_number(config, "mockpool_acquire_timeout", float, minimum=0.0, exclusive=True),
            max_total=_number(config, "mockpool_max_total", int, minimum=1),
            max_size=_number(config, "mockpool_max_size", int, minimum=1),
            history=bool(config.getini("mockpool_history")),
            warm=bool(config.getini("mockpool_warm")),
            supervise=bool(config.getini("mockpool_supervise")),
            leaks=leaks,
            report=report,
            summary=bool(config.getini("mockpool_summary")),
            isolation_verify=bool(config.getini("mockpool_isolation_verify")),
            service_options=_service_option_lines(config.getini("mockpool_service_options"), services),
        )


def _number(
    config: pytest.Config, name: str, kind: type[int | float], *, minimum: float, exclusive: bool = False
) -> Any:
    raw = str(config.getini(name)).strip()
    if raw.lower() in ("", "none"):
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        noun = "a whole number" if kind is int else "a number of seconds"
        raise pytest.UsageError(f"{name} = {raw!r}: use {noun} {bound}, or 'none'")
    return value


def _service_option_lines(lines: Iterable[str], services: Sequence[str]) -> dict[str, dict[str, str]]:
    """Split ``mockpool_service_options`` lines (``redis.decode_responses = true``) by service.
    Only the form is checked here; the option names and values are checked against the
    service's own function when the pool is made (:func:`_typed_options`)."""
    out: dict[str, dict[str, str]] = {}
    for line in lines:
        text = str(line).strip()
        if not text or text.startswith("#"):
            continue
        target, eq, raw = text.partition("=")
        service, dot, option = target.strip().partition(".")
        service, option = service.strip(), option.strip()
        if not eq or not dot or not service or not option.isidentifier():
            raise pytest.UsageError(
                f"mockpool_service_options: {text!r} is not SERVICE.OPTION = VALUE (for example "
                "'redis.decode_responses = true'), one per line"
            )
        if service not in BUILTIN_SERVICES:
            raise pytest.UsageError(
                f"mockpool_service_options: {text!r} names {service!r}, which is not a built-in "
                f"service ({', '.join(BUILTIN_SERVICES)}); options of your own services go in "
                "the ServiceSpec you register in pytest_mockpool_register"
            )
        enabled = service in services or (service in _DEVICE_SESSION_MEMBERS and "device_session" in services)
        if not enabled:
            raise pytest.UsageError(
                f"mockpool_service_options: {text!r} sets an option of {service!r}, which "
                f"mockpool_services does not enable ({' '.join(services) or 'empty'}); add it there"
            )
        out.setdefault(service, {})[option] = raw.strip()
    return out


# == per-session state ==========================================================================


@dataclass
class _Leak:
    test: str
    service: str
    where: str
    phase: str

    def to_dict(self) -> dict[str, str]:
        return {"test": self.test, "service": self.service, "where": self.where, "phase": self.phase}


@dataclass
class _State:
    """What the plugin keeps for one pytest session (in ``config.stash``)."""

    config: pytest.Config
    settings: _Settings
    #: ``gw0``... on an xdist worker, None elsewhere.
    worker_id: str | None
    #: Processes that share the run: xdist's worker count, else 1.
    workers: int
    #: Running the xdist controller (it runs no tests).
    controller: bool
    history: History | None = None
    history_note: str | None = None
    pool: MockPool | None = None
    closed: bool = False
    #: Services that ``@pytest.mark.mockpool(...)`` declares, by test id.
    marked: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Services the collected tests are expected to use (marks and history), for warming.
    planned: set[str] = field(default_factory=set)
    #: Leases held by fixtures wider than a function, and allowed leaks: never a test's leak.
    scoped: set[Lease[Any]] = field(default_factory=set)
    #: Leases that tests marked ``allow_leak=True`` kept.
    allowed: set[Lease[Any]] = field(default_factory=set)
    leaks: list[_Leak] = field(default_factory=list)
    #: What each process reported (one entry without xdist, one per worker with it).
    outputs: list[dict[str, Any]] = field(default_factory=list)
    warmed: dict[str, int] = field(default_factory=dict)
    warm_started: bool = False
    #: Why the pool could not be made (registration failed): told again, never retried.
    build_error: str | None = None
    #: The async runners of the collected tests that use the pool (None before collection
    #: and on the xdist controller, which collects nothing).
    runner: str | None = None
    #: The mockpool line was printed in the header (services or a hook known at start).
    announced: bool = False

    # -- the pool ------------------------------------------------------------------------------

    def build(self) -> MockPool:
        """Make the session's pool and register its services, once. Called at the end of
        collection when a collected test uses the fixture (else when the fixture is first
        requested). A registration that fails raises :class:`pytest.UsageError` naming what
        failed and the line of the project's code that raised, without mockpool's frames."""
        if self.pool is not None:
            return self.pool
        if self.closed:
            raise pytest.UsageError(
                "mockpool: the session's pool is closed; the fixture was requested after the session ended"
            )
        if self.build_error is not None:
            raise pytest.UsageError(self.build_error)
        try:
            self.pool = self._make()
        except pytest.UsageError as exc:
            self.build_error = str(exc)
            raise
        return self.pool

    def _make(self) -> MockPool:
        from .pool import MockPool

        s = self.settings
        share = self.workers
        pool = MockPool(
            name="pytest" if self.worker_id is None else f"pytest-{self.worker_id}",
            max_total=None if s.max_total is None else max(1, s.max_total // share),
            default_timeout=s.acquire_timeout,
            track_leases=True,
            supervise=s.supervise,
            history=self.history,
            config=self.config,
            isolation_verify=s.isolation_verify,
        )
        max_size = None if s.max_size is None else max(1, math.ceil(s.max_size / share))
        try:
            _register_builtins(pool, s.services, max_size, s.service_options, share)
        except pytest.UsageError:
            raise
        except Exception as exc:
            raise pytest.UsageError(
                _registration_error(exc, f"registering mockpool_services = {' '.join(s.services)}")
            ) from None
        try:
            self.config.hook.pytest_mockpool_register(pool=pool, config=self.config)
        except Exception as exc:
            raise pytest.UsageError(_registration_error(exc, "pytest_mockpool_register")) from None
        return pool

    def get_pool(self) -> MockPool:
        """The pool, made if it was not yet, and warmed the first time it is asked for."""
        pool = self.build()
        if not self.warm_started:
            self.warm_started = True
            if self.settings.warm:
                self._warm(pool)
        return pool

    def _warm(self, pool: MockPool) -> None:
        """Pre-create, per service: ``min_size``, or this worker's share of the peak that
        history recorded for the services the collected tests use, whichever is larger."""
        history = pool.history
        targets: dict[str, int] = {}
        for name, stats in pool.stats().items():
            want = stats.min_size
            if history.runs and (not self.planned or name in self.planned):
                want = max(want, math.ceil(history.peak(name) / self.workers))
            targets[name] = min(want, stats.max_size)
        targets = {name: n for name, n in targets.items() if n > 0}
        if not targets:
            return
        self.warmed = targets
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # No loop is running (every runner but cooperative): warm now, in a private loop,
            # and wait. Instances are loop-agnostic; what binds to a loop is rebuilt per loop.
            # A loop_factory keeps asyncio.Runner from resetting the thread's current loop.
            with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
                runner.run(pool.warm(targets))
        else:
            # Cooperative calls fixtures inside its loop: create in the background there.
            for name, count in targets.items():
                pool.expect([name], count=count)

    def services_for(self, item: pytest.Item | None) -> tuple[str, ...]:
        if item is None:
            return ()
        marked = self.marked.get(item.nodeid, ())
        if self.history is None:
            return marked
        return marked + self.history.services_for_test(item.nodeid)

    def close(self) -> None:
        """End the pool: record leases still held, close, and keep what to report."""
        if self.closed:
            return
        self.closed = True
        pool = self.pool
        if pool is None:
            return
        # Every fixture is finalized by now: whatever is still held leaked (a lease a test
        # was allowed to keep is not reported). Take the instances back, so that closing
        # does not wait ``close_timeout`` for leases that will never end.
        for lease in pool.active_leases():
            if lease not in self.allowed:
                self.leaks.append(
                    _leak(self.config, lease, lease.owner or "(no test: a fixture)", "session end")
                )
            pool.reclaim(lease)
        run = pool.run_record().to_dict() if self.settings.history else None
        if not pool.closed and not _loop_running():
            # Not pool.close(): asyncio.run sets the thread's current loop and then clears it,
            # dropping the loop a runner left there. pytest-asyncio 0.23 leaves one after each
            # test; dropped, it is collected unclosed (ResourceWarning). A loop_factory keeps
            # the current loop as it is, as in _warm.
            with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
                runner.run(pool.aclose())
        report = pool.report()
        self.outputs.append(
            {
                "worker": self.worker_id,
                "services": _services_payload(pool),
                "leaks": [leak.to_dict() for leak in self.leaks],
                "warmup_s": pool.warmup_s,
                "warmed": dict(self.warmed),
                "report": report.to_dict(),
                "run": run,
            }
        )


_STATE = pytest.StashKey[_State]()
_USES_POOL = pytest.StashKey[bool]()
_ALLOW_LEAK = pytest.StashKey[bool]()
_BEFORE = pytest.StashKey["set[Lease[Any]]"]()
_NEXT = pytest.StashKey["pytest.Item | None"]()


def _state(config: pytest.Config) -> _State | None:
    return config.stash.get(_STATE, None)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mockpool(*services, allow_leak=False): the services this test acquires (the pool "
        "creates them ahead of it); allow_leak=True lets a lease outlive the test.",
    )
    settings = _Settings.read(config)
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        worker_id: str | None = str(workerinput.get("workerid", "gw?"))
        workers = int(workerinput.get("workercount", 1))
        controller = False
    else:
        worker_id = None
        numprocesses = getattr(config.option, "numprocesses", None)
        distributed = (
            isinstance(numprocesses, int)
            and numprocesses > 0
            and getattr(config.option, "dist", "no") != "no"
        )
        workers = int(numprocesses) if distributed else 1  # type: ignore[arg-type]
        controller = distributed
    state = _State(
        config=config, settings=settings, worker_id=worker_id, workers=max(1, workers), controller=controller
    )
    if settings.history:
        cached = workerinput.get("mockpool_history") if workerinput is not None else _read_cache(config)
        if cached is not None or workerinput is None:
            _load_history(state, cached)
    config.stash[_STATE] = state


def _read_cache(config: pytest.Config) -> object:
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    return cache.get(HISTORY_KEY, None)


def _load_history(state: _State, cached: object) -> None:
    from .history import History

    # A corrupt or foreign cache entry is ignored with a note in the summary, never a crash
    # and never an error under filterwarnings=error.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state.history = History.from_cache(cached) if cached is not None else History()
    if caught:
        state.history_note = f"history in the cache ignored: {caught[0].message}"


def _register_builtins(
    pool: MockPool,
    names: Sequence[str],
    max_size: int | None,
    options: Mapping[str, Mapping[str, str]],
    workers: int,
) -> None:
    if not names:
        return
    from . import services as builtins

    wanted = list(dict.fromkeys(names))
    if "device_session" in wanted:
        # The session service is built on these three; register them first if not named.
        missing = [m for m in _DEVICE_SESSION_MEMBERS if m not in wanted]
        wanted = [n for n in wanted if n != "device_session"] + missing + ["device_session"]
    makers: dict[str, Callable[..., Any]] = {
        "redis": builtins.redis_service,
        "database": builtins.sql_service,
        "jwt": builtins.jwt_service,
        "http": builtins.http_service,
        "device_session": builtins.device_session_service,
    }
    for name in wanted:
        kwargs: dict[str, Any] = {} if max_size is None else {"max_size": max_size}
        if name == "database" and "device_session" in wanted:
            # device_session stores its rows in the database service, which needs its tables.
            kwargs["schema"] = builtins.DEVICE_SESSION_SCHEMA
        kwargs.update(_typed_options(name, makers[name], options.get(name, {}), workers))
        pool.register(makers[name](**kwargs))


# -- mockpool_service_options: values typed by the built-in's own signature ----------------------

#: Words in an option's annotation that an ini value cannot express (hooks, mappings, lists).
_NOT_FROM_INI = (
    "Mapping",
    "Callable",
    "Hook",
    "Sequence",
    "Responder",
    "Sql",
    "Seed",
    "Any",
    "dict",
    "tuple[str",
)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _typed_options(
    service: str, maker: Callable[..., Any], raw: Mapping[str, str], workers: int
) -> dict[str, Any]:
    """``raw`` (option -> ini text) as keyword arguments of ``maker``: each option must be one
    of its keywords or a :class:`~mockpool.ServiceSpec` field that an ini value can express,
    and each value parses as that option's type. Sizes are for the whole run, like
    ``mockpool_max_size``: divided among xdist workers, rounded up."""
    if not raw:
        return {}
    import dataclasses
    import difflib

    from .spec import ServiceSpec

    kinds: dict[str, tuple[str, bool] | None] = {
        f.name: _option_kind(f.type, f.default) for f in dataclasses.fields(ServiceSpec) if f.name != "name"
    }
    for param in inspect.signature(maker).parameters.values():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            kinds[param.name] = _option_kind(param.annotation, param.default)
    settable = sorted(name for name, kind in kinds.items() if kind is not None)
    out: dict[str, Any] = {}
    for option, text in raw.items():
        where = f"mockpool_service_options: {service}.{option} = {text}"
        if option not in kinds:
            close = difflib.get_close_matches(option, settable, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise pytest.UsageError(
                f"{where}: {maker.__name__}() has no option {option!r}; {hint}its options: {', '.join(settable)}"
            )
        kind = kinds[option]
        if kind is None:
            raise pytest.UsageError(
                f"{where}: {option!r} takes a Python object (a hook, a mapping or a list), which an "
                f"ini value cannot express; register the service yourself with {maker.__name__}"
                f"({option}=...) in pytest_mockpool_register, and leave {service!r} out of mockpool_services"
            )
        try:
            value = _parse_option(text, *kind)
        except ValueError as exc:
            raise pytest.UsageError(f"{where}: expected {exc}") from None
        if option in ("max_size", "min_size") and isinstance(value, int) and workers > 1:
            value = max(1 if option == "max_size" else 0, math.ceil(value / workers))
        out[option] = value
    return out


def _option_kind(annotation: object, default: object) -> tuple[str, bool] | None:
    """What an option holds, from its annotation (text, under postponed evaluation) and its
    default: ``(kind, may be none)``, or None when an ini value cannot express it."""
    text = str(annotation).replace(" ", "")
    if any(word in text for word in _NOT_FROM_INI):
        return None
    alternatives = text.split("|")
    nullable = "None" in alternatives or default is None
    if text.startswith("tuple[int"):
        return "version", nullable
    if text.startswith("Literal["):
        return "str", nullable
    for kind in ("bool", "int", "float", "str"):
        if kind in alternatives:
            return kind, nullable
    return None


def _parse_option(text: str, kind: str, nullable: bool) -> Any:
    """An ini value as ``kind``; raises ValueError saying what was expected."""
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    if kind == "str":
        return text[1:-1] if quoted else text
    low = text.lower()
    if nullable and low in ("none", "null"):
        return None
    either = " or none" if nullable else ""
    if kind == "bool":
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"true or false{either}")
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return tuple(int(part) for part in text.replace(",", ".").split("."))  # version
    except ValueError:
        expected = {"int": "a whole number", "float": "a number", "version": "a version such as 7.4"}
        raise ValueError(expected[kind] + either) from None


def _registration_error(exc: BaseException, what: str) -> str:
    """A registration failure, told once: what failed, the error, and the line of the
    project's code that raised it (the deepest frame outside mockpool, pluggy and pytest)."""
    import traceback

    internal = tuple(
        os.path.dirname(os.path.abspath(m.__file__)) + os.sep
        for m in (sys.modules[__package__ or "mockpool"], sys.modules["pluggy"], sys.modules["_pytest"])
        if m.__file__
    )
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        # "<string>": code that dataclasses generate (ServiceSpec.__init__) is not the project's.
        if not frame.filename.startswith("<") and not os.path.abspath(frame.filename).startswith(internal):
            where = f" at {_relpath(frame.filename)}:{frame.lineno}"
    return f"mockpool: {what} failed{where}: {type(exc).__name__}: {exc}"


def _relpath(filename: str) -> str:
    try:
        return os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename


# == header, collection =========================================================================


def _asyncio_runner(config: pytest.Config) -> str:
    mode = config.getoption("asyncio_mode", None) or config.getini("asyncio_mode")
    try:
        scope = config.getini("asyncio_default_test_loop_scope") or "function"
    except ValueError:  # pytest-asyncio < 0.26 has no such option
        scope = "function"
    return f"pytest-asyncio ({mode}, {scope} loop)"


def _runner(config: pytest.Config, items: Iterable[pytest.Item] | None = None) -> str:
    """The async runners that run the tests using the pool, as the header line and the report
    name them. With the collected ``items``: the runner of each test that uses the fixture
    (anyio's plugin, always installed with mockpool, is named only when it runs one). Without
    (the xdist controller, which collects nothing): the plugins that run unmarked async tests."""
    pm = config.pluginmanager
    found: dict[str, None] = {}
    if items is None:
        if pm.has_plugin("asyncio-cooperative"):
            found["asyncio-cooperative"] = None
        if pm.has_plugin("asyncio"):
            found[_asyncio_runner(config)] = None
        # anyio's ini option exists only while its plugin is loaded (-p no:anyio removes it).
        if pm.has_plugin("anyio") and "auto" in (
            config.getoption("anyio_mode", None),
            config.getini("anyio_mode"),
        ):
            found["anyio (auto mode)"] = None
    else:
        for item in items:
            if not item.stash.get(_USES_POOL, False):
                continue
            if _is_cooperative(item):
                found["asyncio-cooperative"] = None
            elif "anyio_backend" in getattr(item, "fixturenames", ()):
                found["anyio"] = None  # anyio's plugin asks every test it runs for the backend
            elif item.get_closest_marker("asyncio") is not None and pm.has_plugin("asyncio"):
                found[_asyncio_runner(config)] = None  # auto mode marks the tests it takes
    order = ("pytest-asyncio", "anyio", "asyncio-cooperative")
    named = sorted(found, key=lambda runner: [runner.startswith(o) for o in order].index(True))
    return " + ".join(named) or "none (sync tests only)"


def _mockpool_line(config: pytest.Config, state: _State, runner: str | None) -> str:
    services = list(state.settings.services)
    if _hook_implemented(config):
        services.append("+ pytest_mockpool_register")
    where = f"{state.workers} xdist workers, a pool each" if state.controller else "no xdist"
    runs = f"; runner: {runner}" if runner is not None else ""
    return f"mockpool: services: {' '.join(services) or 'none yet'}{runs}; {where}"


def _hook_implemented(config: pytest.Config) -> bool:
    return bool(config.pluginmanager.hook.pytest_mockpool_register.get_hookimpls())


def pytest_report_header(config: pytest.Config) -> str | None:
    """The xdist controller's mockpool line (it collects nothing, so it is told here, from
    the configuration); elsewhere the line comes after collection."""
    state = _state(config)
    if state is None or not state.controller:
        return None
    if not state.settings.services and not _hook_implemented(config):
        return None  # the project does not use mockpool: say nothing
    state.announced = True
    return _mockpool_line(config, state, None)


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Path, items: Sequence[pytest.Item]
) -> str | None:
    """The mockpool line, where the project uses mockpool (services configured, the hook
    implemented or a collected test using the fixture), with the runners of those tests."""
    state = _state(config)
    if (
        state is None
        or state.announced
        or config.option.verbose < 0
        or getattr(config.option, "no_header", False)
    ):
        return None
    users = sum(1 for item in items if item.stash.get(_USES_POOL, False))
    if not users and not state.settings.services and not _hook_implemented(config):
        return None
    runner = state.runner if users else "no collected test uses the mockpool fixture"
    return _mockpool_line(config, state, runner)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """One pass over the items: marks, who uses the pool, the services to warm. Then, if a
    test uses the pool, make it: a registration error stops the run here, once, as a usage
    error, rather than failing every test that asks for the fixture."""
    state = _state(config)
    if state is None:
        return
    cooperative = config.pluginmanager.has_plugin("asyncio-cooperative")
    history = state.history
    planned = state.planned
    users = 0
    for item in items:
        uses_pool = "mockpool" in getattr(item, "fixturenames", ())
        users += uses_pool
        item.stash[_USES_POOL] = uses_pool
        mark = item.get_closest_marker("mockpool")
        if mark is not None:
            names = tuple(str(a) for a in mark.args)
            if names:
                state.marked[item.nodeid] = names
                planned.update(names)
            item.stash[_ALLOW_LEAK] = bool(mark.kwargs.get("allow_leak", False))
        if history is not None and uses_pool:
            planned.update(history.services_for_test(item.nodeid))
        if cooperative and uses_pool and _is_cooperative(item):
            fn = item.function  # type: ignore[attr-defined]
            if inspect.iscoroutinefunction(fn):
                item.obj = _OwnedFunction(fn, state, item.nodeid)  # type: ignore[attr-defined]
    state.runner = _runner(config, items)
    if users and not config.option.collectonly:
        try:
            state.build()
        except pytest.UsageError as exc:
            if state.worker_id is None:
                raise
            # An xdist worker cannot end the run from its collection (xdist then reports an
            # INTERNALERROR): stop after its first test, which fails with the message; the
            # controller ends the run, "Interrupted: <the message>".
            session.shouldstop = str(exc)


def _is_cooperative(item: pytest.Item) -> bool:
    # Cooperative runs the items carrying its mark on the item itself (own_markers).
    return any(
        m.name == "asyncio_cooperative" for m in item.own_markers
    ) and item.config.pluginmanager.has_plugin("asyncio-cooperative")


# == the test's run: owner, warming ahead, leaks ================================================


async def _noop() -> None:
    return None


async def _start_runtime(pool: MockPool) -> None:
    """Start the pool's runtime in the running loop and wait until its supervisors are up.

    Waiting matters: a runtime still starting its supervisors (inside anyio's
    ``TaskGroup.start``) when the loop is torn down cannot be cancelled cleanly (anyio 4.16
    waits, shielded, for a task that never ran), which hangs ``asyncio.Runner.close``.
    Once ready, cancelling the runtime at loop close is immediate."""
    pool.spawn(_noop)
    await pool._runtime().wait_ready()


async def _enter_test(state: _State, item: pytest.Item | None, wanted: tuple[str, ...]) -> None:
    """At the start of a test's coroutine, in its loop: make sure this loop has the pool's
    runtime (so the supervisors run while the test does), and create ahead what this test
    and the next one will acquire."""
    pool = state.pool
    if pool is None or pool.closed:
        return
    if state.settings.supervise:
        await _start_runtime(pool)
    if state.settings.warm and wanted:
        pool.expect(wanted)


def _owned(
    fn: Callable[..., Coroutine[Any, Any, Any]], state: _State, item: pytest.Item
) -> Callable[..., Any]:
    from .errors import MockPoolError
    from .lease import lease_owner

    nodeid = item.nodeid

    @functools.wraps(fn)
    async def run_owned(*args: Any, **kwargs: Any) -> Any:
        token = lease_owner.set(nodeid)
        try:
            if asyncio._get_running_loop() is None:
                return await _off_asyncio(state, nodeid, fn(*args, **kwargs), MockPoolError)
            await _enter_test(
                state, item, state.services_for(item) + state.services_for(item.stash.get(_NEXT, None))
            )
            result = await fn(*args, **kwargs)
            # One loop turn before the runner may close a function-scoped loop: background
            # tasks the pool spawned during the test's last step get to start, so cancelling
            # them at loop close cannot leave a coroutine that was never awaited.
            await asyncio.sleep(0)
            return result
        finally:
            lease_owner.reset(token)

    return run_owned


async def _off_asyncio(
    state: _State, nodeid: str, test: Coroutine[Any, Any, Any], own_error: type[Exception]
) -> Any:
    """Run a test's coroutine under an async library that is not asyncio (anyio's trio
    backend): there is no runtime to start, and acquiring must say that mockpool runs on
    asyncio. An acquire that waits says so itself (``hooks.running_loop``); one served at once
    by an idle (warmed) instance cannot, without a check on the fast path: it may even work, or
    fail later inside a loop-bound instance (fakeredis: "no running event loop"). So a test
    that acquired here fails with the same explanation, or its error gets it as a note.
    (``own_error`` is ``MockPoolError``, imported by the caller: no import runs in a coroutine.)"""
    pool = state.pool
    try:
        result = await test
    except own_error:
        raise  # the acquire's own message
    except BaseException as exc:
        if (message := _off_asyncio_message(pool, nodeid)) is not None:
            exc.add_note(message)
        raise
    if (message := _off_asyncio_message(pool, nodeid)) is not None:
        pytest.fail(message, pytrace=False)
    return result


def _off_asyncio_message(pool: MockPool | None, nodeid: str) -> str | None:
    used = sorted(pool.test_services.get(nodeid, ())) if pool is not None else []
    if not used:
        return None
    try:
        import sniffio

        library = sniffio.current_async_library()
    except Exception:
        library = "an async library that is not asyncio"
    return (
        f"mockpool: {nodeid} acquired {', '.join(map(repr, used))} under {library}; mockpool runs "
        "on asyncio (under anyio, use the asyncio backend; trio is not supported). An idle "
        "instance served the acquire at once, before anything could check the loop."
    )


class _OwnedFunction:
    """A test function for pytest-asyncio-cooperative that sets the lease owner in the
    test's task. Function-like on purpose: cooperative reads the fixture names from
    ``__code__`` and tests ``inspect.iscoroutinefunction``, which accepts an object with a
    function's attributes; a ``functools.wraps`` wrapper would show ``(*args, **kwargs)``."""

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, Any]], state: _State, nodeid: str) -> None:
        self.__wrapped__ = fn
        self.__name__: str = fn.__name__
        self.__qualname__: str = getattr(fn, "__qualname__", fn.__name__)
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__
        self.__code__ = fn.__code__
        self.__defaults__ = fn.__defaults__
        self.__kwdefaults__ = fn.__kwdefaults__
        self.__annotations__ = fn.__annotations__
        self.__dict__.update({k: v for k, v in fn.__dict__.items() if k not in self.__dict__})
        self._state = state
        self._nodeid = nodeid

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .lease import lease_owner

        token = lease_owner.set(self._nodeid)
        try:
            await _enter_test(self._state, None, self._state.marked.get(self._nodeid, ()))
            return await self.__wrapped__(*args, **kwargs)
        finally:
            lease_owner.reset(token)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    item.stash[_NEXT] = nextitem
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    state = _state(item.config)
    checked = False
    if state is not None and state.pool is not None:
        item.stash[_BEFORE] = set(state.pool.active_leases())
        _check_mark(state.pool, item)
        checked = True
    result = yield
    if not checked and state is not None and state.pool is not None:
        _check_mark(state.pool, item)  # the test's fixtures made the pool
    return result


def _check_mark(pool: MockPool, item: pytest.Item) -> None:
    """Fail a test whose ``@pytest.mark.mockpool`` names a service the pool does not have
    (a typo would otherwise only leave it unwarmed), with the suggestion ``acquire`` gives."""
    mark = item.get_closest_marker("mockpool")
    if mark is None:
        return
    from .errors import UnknownServiceError

    problems = [
        str(UnknownServiceError(str(name), pool.services, pool=pool.name))
        for name in mark.args
        if name not in pool.service_pools
    ]
    problems += [
        f"unknown keyword {key!r}; the marker takes service names and allow_leak=True"
        for key in mark.kwargs
        if key != "allow_leak"
    ]
    if problems:
        shown = ", ".join([*map(repr, mark.args), *(f"{k}={v!r}" for k, v in mark.kwargs.items())])
        pytest.fail(f"@pytest.mark.mockpool({shown}): " + "; ".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    if fixturedef.argname == "mockpool":
        # pytest-asyncio-cooperative swaps a session fixture's function for an async caching
        # wrapper (``CachedFunction``), which would hand a coroutine to the sync tests it
        # leaves to pytest; give pytest the plain fixture back.
        wrapped = getattr(fixturedef.func, "wrapped_func", None)
        if wrapped is not None:
            fixturedef.func = wrapped  # type: ignore[misc]
    state = _state(request.config)
    if state is None or state.pool is None:
        result = yield
        if state is not None and state.pool is not None and fixturedef.scope != "function":
            state.scoped.update(state.pool.active_leases())
        return result
    from .lease import lease_owner

    pool = state.pool
    if fixturedef.scope == "function":
        # Where contextvars flow into fixtures (pytest-asyncio, sync code), a function
        # fixture's leases belong to its test.
        token = lease_owner.set(request.node.nodeid)
        try:
            return (yield)
        finally:
            lease_owner.reset(token)
    # A wider fixture's leases belong to no test: remember them so no test reports them.
    token = lease_owner.set(None)
    before = set(pool.active_leases())
    try:
        return (yield)
    finally:
        lease_owner.reset(token)
        state.scoped.update(lease for lease in pool.active_leases() if lease not in before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    state = _state(item.config)
    if state is None or state.pool is None or not item.stash.get(_USES_POOL, False):
        return (yield)
    from .lease import lease_owner

    pool = state.pool
    if _is_cooperative(item):
        # The test already ran in cooperative's loop; this is the replay that reports it.
        # Other tests may still hold leases, so only this test's own count.
        try:
            result = yield
        except BaseException as exc:
            _check_leaks(
                state, item, [le for le in pool.active_leases() if le.owner == item.nodeid], "call", exc
            )
            raise
        _check_leaks(
            state, item, [le for le in pool.active_leases() if le.owner == item.nodeid], "call", None
        )
        _check_isolation(pool, item)
        return result
    at_call = set(pool.active_leases())
    token = lease_owner.set(item.nodeid)
    original = getattr(item, "obj", None)
    swapped = original is not None and inspect.iscoroutinefunction(original)
    if swapped:
        item.obj = _owned(original, state, item)  # type: ignore[arg-type, attr-defined]
    try:
        result = yield
    except BaseException as exc:
        _check_leaks(state, item, _new_leases(state, pool, at_call), "call", exc)
        raise
    finally:
        lease_owner.reset(token)
        if swapped:
            item.obj = original  # type: ignore[attr-defined]
    _check_leaks(state, item, _new_leases(state, pool, at_call), "call", None)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    state = _state(item.config)
    try:
        result = yield
    except BaseException as exc:
        if state is not None and state.pool is not None and not _is_cooperative(item):
            _check_leaks(
                state, item, _new_leases(state, state.pool, item.stash.get(_BEFORE, set())), "teardown", exc
            )
        raise
    if state is not None and state.pool is not None and not _is_cooperative(item):
        # Function fixtures are finalized now: what this test's setup, body or fixtures
        # acquired and still hold is its leak.
        _check_leaks(
            state, item, _new_leases(state, state.pool, item.stash.get(_BEFORE, set())), "teardown", None
        )
        _check_isolation(state.pool, item)
    return result


def _check_isolation(pool: MockPool, item: pytest.Item) -> None:
    """Fail a test whose leases left state that the reset did not clean (isolation-verify
    mode): the next test would have seen it, had the pool not caught it and recovered."""
    found = pool.take_isolation_failures(item.nodeid)
    if found:
        pytest.fail(
            f"mockpool: {item.nodeid} left state that the reset did not clean:\n"
            + "\n".join(f"  {error}" for error in found)
            + "\nThe pool caught it (mockpool_isolation_verify) and sent the instance to recovery; "
            "the next test would otherwise have seen it.",
            pytrace=False,
        )


def _new_leases(state: _State, pool: MockPool, before: set[Lease[Any]]) -> list[Lease[Any]]:
    active = pool.active_leases()
    state.scoped.intersection_update(active)
    return [lease for lease in active if lease not in before and lease not in state.scoped]


def _check_leaks(
    state: _State, item: pytest.Item, leaked: list[Lease[Any]], phase: str, failure: BaseException | None
) -> None:
    """Take back the instances of leases ``item`` still holds and fail it (or warn)."""
    if not leaked or state.settings.leaks == "off":
        return
    if item.stash.get(_ALLOW_LEAK, False):
        state.scoped.update(leaked)
        state.allowed.update(leaked)
        return
    assert state.pool is not None
    lines = []
    for lease in leaked:
        leak = _leak(state.config, lease, item.nodeid, phase)
        state.leaks.append(leak)
        lines.append(f"  service {leak.service!r}, acquired at {leak.where}")
        state.pool.reclaim(lease)
    where = "its body" if phase == "call" else "its fixtures or a task it started"
    message = (
        f"mockpool: {item.nodeid} ended still holding {len(leaked)} lease(s) taken in {where}:\n"
        + "\n".join(lines)
        + "\nThe instance was taken back and sent to recovery. Leave the 'async with "
        "pool.acquire(...)' block (and await any task that holds a lease) before the test "
        "ends, or mark the test @pytest.mark.mockpool(allow_leak=True) if the lease must "
        "outlive it."
    )
    if state.settings.leaks == "warn":
        item.warn(MockPoolLeakWarning(message))
        return
    if failure is not None:
        failure.add_note(message)
        return
    pytest.fail(message, pytrace=False)


def _leak(config: pytest.Config, lease: Lease[Any], test: str, phase: str) -> _Leak:
    where = "an unknown line"
    if lease.where is not None:
        filename, line = lease.where
        try:
            filename = os.path.relpath(filename, config.rootpath)
        except ValueError:  # another drive on Windows
            pass
        where = f"{filename}:{line}"
    return _Leak(test=test, service=lease.service, where=where, phase=phase)


# == the fixture ===============================================================================


@pytest.fixture(scope="session")
def mockpool(request: pytest.FixtureRequest) -> MockPool:
    """The session's pool (one per xdist worker). Synchronous, so any runner can use it:
    ``async with mockpool.acquire("redis") as redis: ...`` in the test."""
    state = _state(request.config)
    if state is None:  # pragma: no cover - pytest_configure always runs first
        raise pytest.UsageError("mockpool: the plugin was not configured")
    try:
        return state.get_pool()
    except pytest.UsageError as exc:
        message = str(exc)
    # The registration failed (an xdist worker, or a pool first made here through
    # getfixturevalue): the message, without the plugin's frames.
    pytest.fail(message, pytrace=False)


# == the end of the run: workers, history, summary, report =====================================


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    if state is None:
        return
    state.close()
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        # A worker: the controller merges, prints and writes the cache once.
        if state.outputs:
            out = state.outputs[-1]
            workeroutput["mockpool_run"] = out.pop("run")
            workeroutput["mockpool_stats"] = out
        return
    _save_history(state)
    _write_report(state)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand each worker the history, so all warm from the same one."""
    state = _state(node.config)
    if state is not None and state.history is not None and state.history.runs:
        node.workerinput["mockpool_history"] = state.history.to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: keep what a finished worker reported."""
    state = _state(node.config)
    output: Mapping[str, Any] | None = getattr(node, "workeroutput", None)
    if state is None or not output or "mockpool_stats" not in output:
        return
    stats = dict(output["mockpool_stats"])
    stats["run"] = output.get("mockpool_run")
    state.outputs.append(stats)


def _save_history(state: _State) -> None:
    """Merge this run (all workers at once) into the cached history and write it: only here,
    in the process that is not an xdist worker."""
    cache = getattr(state.config, "cache", None)
    if cache is None or not state.settings.history or state.history is None:
        return
    from .history import HistoryFormatError, RunRecord

    runs = []
    for out in state.outputs:
        if out.get("run") is None:
            continue
        try:
            runs.append(RunRecord.from_dict(out["run"]))
        except HistoryFormatError as exc:
            state.history_note = f"worker {out.get('worker')}: run record ignored: {exc}"
    if not runs:
        return
    merged = state.history.merge(RunRecord.combine(runs))
    cache.set(HISTORY_KEY, merged.to_dict())
    state.history_note = (state.history_note + "; " if state.history_note else "") + (
        f"history: {merged.runs} run(s) kept in pytest's cache ({HISTORY_KEY})"
    )


def _write_report(state: _State) -> None:
    path = state.settings.report
    if path is None or not state.outputs:
        return
    if len(state.outputs) == 1 and state.outputs[0].get("worker") is None:
        data = dict(state.outputs[0]["report"])
    else:
        rows = _merge(state.outputs)
        data = {
            "pool": "pytest",
            "services": {name: row.to_dict() for name, row in rows.items()},
            "problems": [p for name, row in rows.items() if (p := row.reset_problem(name)) is not None],
            "workers": {str(out.get("worker")): out["report"] for out in state.outputs},
        }
    data["pytest"] = {
        "runner": state.runner or _runner(state.config),
        "workers": state.workers if state.controller else 0,
        "leaks": [leak for out in state.outputs for leak in out.get("leaks", ())],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _services_payload(pool: MockPool) -> dict[str, dict[str, Any]]:
    """Per service, what the summary needs, as plain JSON (it crosses execnet): counters and
    the kept wait samples, so percentiles merge exactly across workers."""
    payload = {}
    for name, stats in pool.stats().items():
        metrics = pool.service_pools[name].metrics
        payload[name] = {
            "acquisitions": stats.acquisitions,
            "hits": stats.hits,
            "reuses": stats.reuses,
            "misses": stats.misses,
            "recoveries": stats.recoveries.total(),
            "leaks": stats.leaks,
            "degraded_leases": stats.degraded_leases,
            "timeouts": stats.timeouts,
            "resets": stats.resets,
            "reset_failures": stats.reset_failures,
            "isolation_failures": stats.isolation_failures,
            "last_error": stats.last_error,
            "last_reset_error": stats.last_reset_error,
            # The waits as ServiceMetrics.wait_percentiles reads them: the zeros counted, the
            # rest recorded (``waits`` keeps the latest of them).
            "zero_waits": metrics.zero_waits(),
            "recorded_waits": metrics.waits.count,
            "waits": metrics.waits.values(),
        }
    return payload


@dataclass
class _Row:
    acquisitions: int = 0
    hits: int = 0
    reuses: int = 0
    misses: int = 0
    recoveries: int = 0
    leaks: int = 0
    degraded_leases: int = 0
    timeouts: int = 0
    resets: int = 0
    reset_failures: int = 0
    isolation_failures: int = 0
    last_error: str | None = None
    last_reset_error: str | None = None
    zero_waits: int = 0
    recorded_waits: int = 0
    waits: list[float] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        served = self.reuses + self.misses
        return self.hits / served if served else 0.0

    @property
    def reuse_rate(self) -> float:
        served = self.reuses + self.misses
        return self.reuses / served if served else 0.0

    def wait_percentiles(self, *qs: float) -> tuple[float, ...]:
        from .metrics import wait_percentiles  # numpy: loaded at the end of the session only

        return wait_percentiles(self.waits, self.recorded_waits, self.zero_waits, *qs)

    def reset_problem(self, name: str) -> str | None:
        from .metrics import reset_problem

        return reset_problem(
            name,
            self.resets,
            self.reset_failures,
            self.last_reset_error or self.last_error,
            isolation=self.isolation_failures > 0,
        )

    def to_dict(self) -> dict[str, Any]:
        p50, p99 = self.wait_percentiles(50, 99)
        return {
            "acquisitions": self.acquisitions,
            "hits": self.hits,
            "reuses": self.reuses,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "reuse_rate": self.reuse_rate,
            "wait_p50_s": p50,
            "wait_p99_s": p99,
            "recoveries": self.recoveries,
            "leaks": self.leaks,
            "degraded_leases": self.degraded_leases,
            "timeouts": self.timeouts,
            "resets": self.resets,
            "reset_failures": self.reset_failures,
            "last_error": self.last_error,
        }


def _merge(outputs: Iterable[Mapping[str, Any]]) -> dict[str, _Row]:
    rows: dict[str, _Row] = {}
    for out in outputs:
        for name, s in out.get("services", {}).items():
            row = rows.setdefault(name, _Row())
            for counter in (
                "acquisitions",
                "hits",
                "reuses",
                "misses",
                "recoveries",
                "leaks",
                "degraded_leases",
                "timeouts",
                "resets",
                "reset_failures",
                "isolation_failures",
                "zero_waits",
                "recorded_waits",
            ):
                setattr(row, counter, getattr(row, counter) + int(s[counter]))
            # Workers end in no particular order: any worker's last error is as recent as another's.
            row.last_error = s["last_error"] or row.last_error
            row.last_reset_error = s["last_reset_error"] or row.last_reset_error
            row.waits.extend(float(w) for w in s["waits"])
    return rows


def _secs(value: float) -> str:
    from .report import format_seconds  # the pool's modules load when the pool is first used

    return format_seconds(value)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    state = _state(config)
    if state is None or not state.settings.summary or state.worker_id is not None or not state.outputs:
        return
    rows = _merge(state.outputs)
    tr = terminalreporter
    processes = len(state.outputs)
    tr.write_sep("=", "mockpool" + (f" ({processes} workers)" if state.controller else ""))
    header = (
        "service",
        "acquisitions",
        "hit rate",
        "reuse rate",
        "wait p50",
        "wait p99",
        "reset fail",
        "recoveries",
        "leaks",
        "degraded",
    )
    table = [header]
    for name, r in rows.items():
        p50, p99 = r.wait_percentiles(50, 99)
        table.append(
            (
                name,
                str(r.acquisitions),
                f"{100 * r.hit_rate:.1f}%",
                f"{100 * r.reuse_rate:.1f}%",
                _secs(p50),
                _secs(p99),
                str(r.reset_failures),
                str(r.recoveries),
                str(r.leaks),
                str(r.degraded_leases),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        tr.write_line(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    from .report import HIT_LEGEND

    tr.write_line(HIT_LEGEND)
    for name, r in rows.items():
        problem = r.reset_problem(name)
        if problem is not None:
            tr.write_line(f"problem: {problem}", red=True, bold=True)
    errors = {name: r.last_error for name, r in rows.items() if r.last_error}
    if errors:
        tr.write_line("last errors:")
        for name, error in errors.items():
            tr.write_line(f"  {name}: {error}")
    leaks = [leak for out in state.outputs for leak in out.get("leaks", ())]
    if leaks:
        tr.write_line(f"leaked leases ({len(leaks)}):")
        for leak in leaks:
            tr.write_line(
                f"  {leak['test']}: {leak['service']!r} acquired at {leak['where']} ({leak['phase']})"
            )
    warmed: dict[str, int] = {}
    for out in state.outputs:
        for name, n in out.get("warmed", {}).items():
            warmed[name] = warmed.get(name, 0) + int(n)
    if warmed:
        tr.write_line("warmed ahead: " + ", ".join(f"{name}={n}" for name, n in warmed.items()))
    if state.history_note:
        tr.write_line(state.history_note)


def pytest_unconfigure(config: pytest.Config) -> None:
    # sessionfinish does not run when the session never starts (usage errors): close here.
    state = _state(config)
    if state is not None and not state.closed and state.pool is not None and not _loop_running():
        state.close()
