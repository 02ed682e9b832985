"""Helpers shared by the built-in fakes: lazy imports of extras, building the spec."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import sqlite3
import sys
from collections.abc import Callable, Container, Sequence
from types import ModuleType
from typing import Any

from ..errors import MockPoolError, ServiceConfigError
from ..spec import ServiceSpec

__all__ = (
    "MissingExtraError",
    "SqlStep",
    "active_patches",
    "build_spec",
    "end_patches",
    "fingerprint_of",
    "require",
    "run_sql_step",
    "sql_steps",
)

#: A schema, migration or seed step of the SQLite fakes: SQL text run with ``executescript``,
#: or a callable given the (plain ``sqlite3``) connection.
SqlStep = str | Callable[[sqlite3.Connection], object]


class MissingExtraError(MockPoolError, ImportError):
    """An optional library a built-in fake needs is not installed; the message names the extra.

    An ``ImportError``, and a :class:`~mockpool.MockPoolError` like every error mockpool raises."""


def require(
    module: str, *, extra: str, service: str, min_version: str | None = None, why: str = ""
) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it.

    Imported here, when a spec is built, never when :mod:`mockpool.services` is imported, so
    users pay only for the fakes they use. With ``min_version``, an older installed version
    is refused here too, at registration, rather than failing later in every factory call;
    ``why`` says what the older one lacks.
    """
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"service {service!r} needs the {module.partition('.')[0]!r} package, which is not "
            f"installed; install it with: pip install 'mockpool[{extra}]'",
            name=module,
        ) from exc
    if min_version is not None:
        installed = installed_version(mod, module)
        if installed and release(installed) < release(min_version):
            package = module.partition(".")[0]
            raise MissingExtraError(
                f"service {service!r} needs {package} >= {min_version}, and {package} {installed} "
                f"is installed{f' ({why})' if why else ''}; upgrade it with: "
                f"pip install '{package}>={min_version}' (what 'mockpool[{extra}]' asks for)",
                name=module,
            )
    return mod


def installed_version(mod: ModuleType | None, module: str) -> str:
    """The version of ``module``: its ``__version__`` (``mod``, if imported), else its
    distribution's; ``""`` when neither is known (a vendored copy: nothing to compare)."""
    version = getattr(mod, "__version__", "") if mod is not None else ""
    if version:
        return str(version)
    try:
        return importlib.metadata.version(module.partition(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return ""


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``"0.22.1"`` -> ``(0, 22, 1)``, ``"0.19.0rc1"``
    -> ``(0, 19, 0)``. Enough for a floor check without depending on ``packaging``."""
    parts = []
    for piece in version.split("."):
        digits = len(piece) - len(piece.lstrip("0123456789"))
        if digits == 0:
            break
        parts.append(int(piece[:digits]))
        if digits < len(piece):
            break
    return tuple(parts)


def build_spec(name: str, options: dict[str, Any], **hooks: Any) -> ServiceSpec:
    """A ServiceSpec from a fake's hooks; the caller's ``options`` (sizing, timeouts, even a
    hook) take precedence over the fake's defaults."""
    return ServiceSpec(name=name, **{**hooks, **options})


def fingerprint_of(obj: Any, *, bound: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object's attributes as comparable values: plain values by value, other objects by
    identity (a member handle or a method swapped by a test is seen). ``bound`` names the
    attributes that legitimately change with the event loop, and the object each should hold
    now: they compare as "bound" when they hold it."""
    out: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if bound is not None and name in bound and value is bound[name]:
            out[name] = "bound"
        elif value is None or type(value) in (str, bytes, int, float, bool):
            out[name] = value
        else:
            out[name] = (type(value).__name__, id(value))
    return out


def active_patches() -> list[Any]:
    """The patches started (``patcher.start()``, pytest-mock's ``mocker.patch``) and not stopped
    yet: unittest.mock's own list, private, so read with defaults. Found in ``sys.modules``, not
    imported: until a test imports unittest.mock nothing can be patched (and the fakes that do
    not use it do not pay its import)."""
    patch_class = getattr(sys.modules.get("unittest.mock"), "_patch", None)
    active = getattr(patch_class, "_active_patches", None)
    return active if isinstance(active, list) else []  # the list itself, empty or not


def end_patches(active: list[Any], targets: Container[int]) -> None:
    """Stop each patch of ``active`` whose target's ``id`` is in ``targets``: the double, its parts.

    A patch a test's teardown stops (pytest-mock's ``mocker.patch.object``, a finalizer)
    stops after the lease: it would write what it saved during the lease back into a double
    that is idle, or another test's, and fail where the reset already removed what it
    patched (an attribute patched over a method: the stop deletes it). Stopped by the reset,
    last started first, it is gone from the active list, and the teardown's ``stop()`` does
    nothing.
    """
    for patcher in [p for p in reversed(active) if id(getattr(p, "target", None)) in targets]:
        # Whatever the stop leaves (or fails on) is rebuilt by the reset that follows.
        with contextlib.suppress(Exception):
            patcher.stop()


def check_name(name: object, factory: str, *, sql: str | None = None, metadata: str | None = None) -> None:
    """Refuse, naming the right keyword, what a user passed as the service's name by position
    (``sql_service("create table ...")``, ``sqlalchemy_service(Base.metadata)``): the name is
    the only positional parameter, and such a spec would fail only at its first acquire, or
    never, under a name nobody asks for. ``sql`` and ``metadata`` name the keyword that takes
    SQL text, and a SQLAlchemy ``MetaData``."""
    if sql is not None and isinstance(name, str) and any(ch.isspace() or ch in ";()" for ch in name):
        problem, keyword = "looks like SQL", sql
    elif metadata is not None and hasattr(name, "tables") and hasattr(name, "create_all"):
        problem, keyword = "is a MetaData", metadata
    else:
        return  # ServiceSpec reports any other name that is not a string
    raise ServiceConfigError(
        "name",
        name,
        f"{problem}: pass it as {keyword}= ({factory}({keyword}=...)); the first positional "
        f"argument of {factory}() is the service's name",
    )


def sql_steps(label: str, value: SqlStep | Sequence[SqlStep] | None, service: str) -> list[SqlStep]:
    """``value`` as a list of steps: one step (SQL text or a callable), or a sequence of them,
    as users pass a schema (``[CREATE_USERS, CREATE_ORDERS]``)."""
    if value is None:
        return []
    steps: list[Any]
    if isinstance(value, str) or callable(value) or not isinstance(value, Sequence):
        steps = [value]  # one step, or a value of a wrong type reported below
    else:
        steps = list(value)
    for step in steps:
        if not isinstance(step, str) and not callable(step):
            raise TypeError(
                f"service {service!r}: {label}= must be SQL text or a callable(connection), or a "
                f"sequence of those, not {type(step).__name__}"
            )
    return steps


def run_sql_step(conn: sqlite3.Connection, step: SqlStep, *, service: str, label: str) -> None:
    """Run one ``schema=``/``seed=`` step. SQL text that fails raises the same sqlite3 error,
    naming the service, the parameter and the start of the SQL: it surfaces at the first
    acquire (the factory runs it), where sqlite's own message named neither."""
    if not isinstance(step, str):
        step(conn)
        return
    try:
        conn.executescript(step)
    except sqlite3.Error as exc:
        start = " ".join(step.split())
        start = start if len(start) <= 60 else start[:57] + "..."
        error = type(exc)(
            f"service {service!r}: the SQL passed as {label}= failed: {exc} (in {start!r}); "
            f"fix it in {label}=: it runs for every new instance"
        )
        for code in ("sqlite_errorcode", "sqlite_errorname"):  # what code that catches it reads
            if hasattr(exc, code):
                setattr(error, code, getattr(exc, code))
        raise error from exc
