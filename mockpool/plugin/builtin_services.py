"""The built-in services a project enables by name (``mockpool_services``), their options
from the ini file (``mockpool_service_options``, each value typed by the built-in's own
signature), and their registration on the session's pool."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..pool import MockPool

#: Built-in services that ``mockpool_services`` enables by name (``mockpool.services``).
BUILTIN_SERVICES = ("redis", "database", "jwt", "http", "device_session")
DEVICE_SESSION_MEMBERS = ("redis", "jwt", "database")


def service_option_lines(lines: Iterable[str], services: Sequence[str]) -> dict[str, dict[str, str]]:
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
        enabled = service in services or (service in DEVICE_SESSION_MEMBERS and "device_session" in services)
        if not enabled:
            raise pytest.UsageError(
                f"mockpool_service_options: {text!r} sets an option of {service!r}, which "
                f"mockpool_services does not enable ({' '.join(services) or 'empty'}); add it there"
            )
        out.setdefault(service, {})[option] = raw.strip()
    return out


def register_builtins(
    pool: MockPool,
    names: Sequence[str],
    max_size: int | None,
    options: Mapping[str, Mapping[str, str]],
    workers: int,
) -> None:
    if not names:
        return
    wanted = list(dict.fromkeys(names))
    if "device_session" in wanted:
        # The session service is built on these three; register them first if not named.
        missing = [m for m in DEVICE_SESSION_MEMBERS if m not in wanted]
        wanted = [n for n in wanted if n != "device_session"] + missing + ["device_session"]
    for name in wanted:
        maker = _maker(name)
        kwargs: dict[str, Any] = {} if max_size is None else {"max_size": max_size}
        if name == "database" and "device_session" in wanted:
            from ..services.device_session import DEVICE_SESSION_SCHEMA

            # device_session stores its rows in the database service, which needs its tables.
            kwargs["schema"] = DEVICE_SESSION_SCHEMA
        kwargs.update(_typed_options(name, maker, options.get(name, {}), workers))
        pool.register(maker(**kwargs))


def _maker(name: str) -> Callable[..., Any]:
    """The function behind a built-in's name, its module imported only now: a run that
    enables ``redis`` loads no SQL or HTTP fake."""
    if name == "redis":
        from ..services.redis import redis_service

        return redis_service
    if name == "database":
        from ..services.sql import sql_service

        return sql_service
    if name == "jwt":
        from ..services.jwt import jwt_service

        return jwt_service
    if name == "http":
        from ..services.http import http_service

        return http_service
    from ..services.device_session import device_session_service

    return device_session_service


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

    from ..spec import ServiceSpec

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
