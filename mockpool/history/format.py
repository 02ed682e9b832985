"""The history and run documents: their entries, validation, JSON text and versions.

A history document is what a history file and pytest's cache hold; a run document is what an
xdist worker sends its controller. ``version`` 1, times in seconds, demand in acquisitions per
window::

    {"format": "mockpool-history", "version": 1, "window_s": 1.0, "runs": 3,
     "services": {"redis": {"weight": 1.75, "last_run": 3, "acquisitions": 120.0,
                            "peak": 12.0, "hold_mean_s": 0.01, "hold_p95_s": 0.03,
                            "demand": [4.0, 9.5, ...], "size": 6.0}},
     "tests": {"tests/test_a.py::test_x": {"services": ["redis"], "last_run": 3}}}

    {"format": "mockpool-run", "version": 1, "window_s": 1.0, "duration_s": 7.0,
     "services": {"redis": {"acquisitions": 120, "peak_concurrency": 12, "hold_mean_s": 0.01,
                            "hold_p95_s": 0.03, "demand": [4.0, 9.5, ...], "size": 6}},
     "tests": {"tests/test_a.py::test_x": ["redis"]}}

Reading validates every field (:class:`HistoryFormatError` names the first bad one), with
``json`` only. :data:`VERSION` is the version written, and the newest read. A newer document is
refused: it was written by a newer mockpool, and the error says to upgrade. An older history
document is brought up to :data:`VERSION` by :data:`MIGRATIONS` one version at a time, then
validated as a current one. Changing the format is: bump :data:`VERSION`, add the step from the
old version, and change :func:`read_history` and :func:`write_history` (and the entries). A run
document has no migrations: it lives for one session, between processes of one install.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT = "mockpool-history"
RUN_FORMAT = "mockpool-run"
VERSION = 1

#: A step of :data:`MIGRATIONS`: a version ``n`` document (a deep copy, to change in place or
#: replace) to version ``n + 1``. It need not validate, nor set ``version``: :func:`upgrade`
#: does both. A step that fails on a malformed document fails as a :class:`HistoryFormatError`.
Migration = Callable[[dict[str, Any]], dict[str, Any]]

#: Version ``n`` -> the step from history documents of version ``n`` to ``n + 1``. Empty while
#: version 1 is the only one: version 2 adds ``MIGRATIONS[1]``, and files of version 1 still load.
MIGRATIONS: dict[int, Migration] = {}

# Stored demand is rounded: sub-micro-acquisition precision is noise and triples the file size.
DEMAND_DECIMALS = 6


class MockPoolHistoryWarning(UserWarning):
    """A history file or value could not be used and was ignored."""

    # Shown (tracebacks, reprs, pickles, pytest-xdist's warning transport) as users name it in
    # warning filters: ``error::mockpool.history.MockPoolHistoryWarning``. Filters themselves
    # import that name and match the class by ``issubclass``, wherever it is defined.
    __module__ = "mockpool.history"


class HistoryFormatError(ValueError):
    """A history or run document does not match the schema; the message names the field."""

    # Shown (tracebacks, reprs, pickles) as users import and catch it.
    __module__ = "mockpool.history"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a history, applied on every merge; they keep a file near 10 MB by default."""

    #: Demand windows kept per service; longer series are re-binned to a coarser window.
    max_windows: int = 3600
    #: Services kept, most recently used first.
    max_services: int = 256
    #: Tests kept, most recently seen first.
    max_tests: int = 10_000
    #: Services recorded per test.
    max_services_per_test: int = 64
    #: A service or test not seen for more runs than this is forgotten.
    max_idle_runs: int = 20

    def __post_init__(self) -> None:
        for name in ("max_windows", "max_services", "max_tests", "max_services_per_test", "max_idle_runs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class ServiceUsage:
    """One service in one run."""

    acquisitions: int
    peak_concurrency: int
    hold_mean_s: float
    hold_p95_s: float
    #: Acquisitions per window of the run's ``window_s``, from the run start.
    demand: tuple[float, ...]
    #: The most instances alive at once: the size the sizing controller settled at.
    size: int = 0


@dataclass(frozen=True, slots=True)
class ServiceHistory:
    """One service across runs. Means are decayed means over the runs that used it."""

    #: Sum of ``decay ** age`` over the runs that used the service: how much evidence there is.
    weight: float
    #: The value of :attr:`History.runs` when the service was last used.
    last_run: int
    acquisitions: float
    #: Decayed maximum of per-run peak concurrency: ``max(peak_k * decay ** age_k)``.
    peak: float
    hold_mean_s: float
    hold_p95_s: float
    #: Decayed mean acquisitions per window of :attr:`History.window_s`, from the run start.
    demand: tuple[float, ...]
    #: Decayed maximum of the size each run settled at: what the next run starts with.
    size: float = 0.0


@dataclass(frozen=True, slots=True)
class TestHistory:
    """The services a test used when it last ran."""

    __test__ = False  # not a pytest test class, whatever its name

    services: tuple[str, ...]
    last_run: int


#: The entry of ``tests`` for the services leased outside any test: by module and session
#: fixtures, threads, anything that ran with no lease owner set. (No test id has this form.)
OUTSIDE_TESTS = "(outside tests)"


# --------------------------------------------------------------------------- documents

#: What a history document holds: ``window_s``, ``runs``, services and tests.
HistoryFields = tuple[float, int, dict[str, ServiceHistory], dict[str, TestHistory]]
#: What a run document holds: ``window_s``, ``duration_s``, services and tests.
RunFields = tuple[float, float, dict[str, ServiceUsage], dict[str, tuple[str, ...]]]


def write_history(
    window_s: float, runs: int, services: Mapping[str, ServiceHistory], tests: Mapping[str, TestHistory]
) -> dict[str, Any]:
    """The history document, ready for JSON."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "window_s": window_s,
        "runs": runs,
        "services": {
            name: {
                "weight": s.weight,
                "last_run": s.last_run,
                "acquisitions": s.acquisitions,
                "peak": s.peak,
                "hold_mean_s": s.hold_mean_s,
                "hold_p95_s": s.hold_p95_s,
                "demand": list(s.demand),
                "size": s.size,
            }
            for name, s in services.items()
        },
        "tests": {test: {"services": list(t.services), "last_run": t.last_run} for test, t in tests.items()},
    }


def read_history(data: object) -> HistoryFields:
    """Upgrade and validate a history document; :class:`HistoryFormatError` otherwise."""
    root = upgrade(data, FORMAT, "history")
    services = {}
    for name, s in _objects(root, "services", "history").items():
        where = f"history.services[{name!r}]"
        services[name] = ServiceHistory(
            weight=_num(s, "weight", where),
            last_run=_int(s, "last_run", where),
            acquisitions=_num(s, "acquisitions", where),
            peak=_num(s, "peak", where),
            hold_mean_s=_num(s, "hold_mean_s", where),
            hold_p95_s=_num(s, "hold_p95_s", where),
            demand=_demand(s, where),
            # Added within version 1: a file without it warms nothing from history.
            size=_num(s, "size", where) if "size" in s else 0.0,
        )
    tests = {}
    for test, t in _objects(root, "tests", "history").items():
        where = f"history.tests[{test!r}]"
        tests[test] = TestHistory(_names(t.get("services"), f"{where}.services"), _int(t, "last_run", where))
    runs = _int(root, "runs", "history")
    last_runs = [(n, s.last_run) for n, s in services.items()] + [(n, t.last_run) for n, t in tests.items()]
    for name, last_run in last_runs:
        if last_run > runs:
            raise HistoryFormatError(f"history: {name!r} last ran in run {last_run}, after the last ({runs})")
    return _window(root, "history"), runs, services, tests


def write_run(
    window_s: float,
    duration_s: float,
    services: Mapping[str, ServiceUsage],
    tests: Mapping[str, tuple[str, ...]],
) -> dict[str, Any]:
    """The run document, ready for JSON."""
    return {
        "format": RUN_FORMAT,
        "version": VERSION,
        "window_s": window_s,
        "duration_s": duration_s,
        "services": {
            name: {
                "acquisitions": u.acquisitions,
                "peak_concurrency": u.peak_concurrency,
                "hold_mean_s": u.hold_mean_s,
                "hold_p95_s": u.hold_p95_s,
                "demand": list(u.demand),
                "size": u.size,
            }
            for name, u in services.items()
        },
        "tests": {test: list(used) for test, used in tests.items()},
    }


def read_run(data: object) -> RunFields:
    """Validate a run document; :class:`HistoryFormatError` naming the bad field otherwise."""
    root = upgrade(data, RUN_FORMAT, "run", migrations={})
    services = {
        name: ServiceUsage(
            acquisitions=_int(s, "acquisitions", f"run.services[{name!r}]"),
            peak_concurrency=_int(s, "peak_concurrency", f"run.services[{name!r}]"),
            hold_mean_s=_num(s, "hold_mean_s", f"run.services[{name!r}]"),
            hold_p95_s=_num(s, "hold_p95_s", f"run.services[{name!r}]"),
            demand=_demand(s, f"run.services[{name!r}]"),
            size=_int(s, "size", f"run.services[{name!r}]") if "size" in s else 0,
        )
        for name, s in _objects(root, "services", "run").items()
    }
    tests = {test: _names(t, f"run.tests[{test!r}]") for test, t in _mapping(root, "tests", "run").items()}
    return _window(root, "run"), _num(root, "duration_s", "run"), services, tests


def upgrade(
    data: object, fmt: str, where: str, *, migrations: Mapping[int, Migration] | None = None
) -> dict[str, Any]:
    """``data`` as a ``fmt`` document of :data:`VERSION`, its header checked; fields unchecked.

    An older version goes through ``migrations`` (:data:`MIGRATIONS` when ``None``, read at the
    call) a step at a time, on a copy: ``data`` is never changed. A newer version, or an older one
    with a step missing, is a :class:`HistoryFormatError` that names the versions.
    """
    if not isinstance(data, dict):
        raise HistoryFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != fmt:
        raise HistoryFormatError(f"{where}: format is {data.get('format')!r}, expected {fmt!r}")
    version = data.get("version")
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # 1.0 has always been read as 1
    if isinstance(version, bool) or not isinstance(version, int):
        raise HistoryFormatError(f"{where}: unsupported version {version!r}, expected {VERSION}")
    if version > VERSION:
        raise HistoryFormatError(
            f"{where}: version {version} was written by a newer mockpool, and this one reads up to "
            f"version {VERSION}; upgrade mockpool to use it"
        )
    if version == VERSION:
        return data
    steps = MIGRATIONS if migrations is None else migrations
    oldest = VERSION
    while oldest - 1 in steps:
        oldest -= 1
    if version < oldest:
        readable = f"version {VERSION}" if oldest == VERSION else f"versions {oldest} to {VERSION}"
        raise HistoryFormatError(f"{where}: unsupported version {version}, expected {readable}")
    try:
        doc = copy.deepcopy(data)
        for n in range(version, VERSION):
            doc = steps[n](doc)
            doc["version"] = n + 1
    except HistoryFormatError:
        raise
    except (LookupError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        # A step reads a document nobody has validated yet: its failure is the document's.
        raise HistoryFormatError(
            f"{where}: cannot upgrade version {version} to {VERSION}: {type(exc).__name__}: {exc}"
        ) from exc
    return doc


def encode(document: Mapping[str, Any]) -> str:
    """Compact JSON; a non-finite number is a ``ValueError`` (no file has one)."""
    return json.dumps(document, allow_nan=False, separators=(",", ":"))


def decode(raw: bytes) -> object:
    """Parse UTF-8 JSON, rejecting ``NaN`` and ``Infinity``. Raises ``ValueError`` (JSON and
    Unicode errors, :class:`HistoryFormatError`) or ``RecursionError``."""
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


# --------------------------------------------------------------------------- fields


def _reject_constant(name: str) -> Any:
    raise HistoryFormatError(f"non-finite number {name} in JSON")


def _mapping(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise HistoryFormatError(f"{where}.{key}: expected an object, got {type(value).__name__}")
    for name in value:
        if not isinstance(name, str):
            raise HistoryFormatError(f"{where}.{key}: expected string keys, got {name!r}")
    return value


def _objects(obj: Mapping[str, Any], key: str, where: str) -> dict[str, dict[str, Any]]:
    value = _mapping(obj, key, where)
    for name, item in value.items():
        if not isinstance(item, dict):
            raise HistoryFormatError(
                f"{where}.{key}[{name!r}]: expected an object, got {type(item).__name__}"
            )
    return value


def _finite(value: object) -> float | None:
    """``value`` as a finite non-negative float, or ``None`` (bools and huge ints are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if 0.0 <= f < math.inf else None


def _num(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = _finite(obj.get(key))
    if value is None:
        raise HistoryFormatError(f"{where}.{key}: expected a non-negative number, got {obj.get(key)!r}")
    return value


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HistoryFormatError(f"{where}.{key}: expected a non-negative integer, got {value!r}")
    return value


def _window(obj: Mapping[str, Any], where: str) -> float:
    value = _num(obj, "window_s", where)
    if value <= 0:
        raise HistoryFormatError(f"{where}.window_s: expected a positive number, got {value!r}")
    return value


def _demand(obj: Mapping[str, Any], where: str) -> tuple[float, ...]:
    value = obj.get("demand")
    numbers = [_finite(x) for x in value] if isinstance(value, list) else [None]
    if any(x is None for x in numbers):
        raise HistoryFormatError(f"{where}.demand: expected a list of non-negative numbers")
    return tuple(x for x in numbers if x is not None)


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise HistoryFormatError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)
