"""Helpers shared by the built-in fakes: lazy imports of extras, building the spec."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ..spec import ServiceSpec

__all__ = ("MissingExtraError", "build_spec", "fingerprint_of", "require")


class MissingExtraError(ImportError):
    """An optional library a built-in fake needs is not installed; the message names the extra."""


def require(module: str, *, extra: str, service: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it.

    Imported here, when a spec is built, never when :mod:`mockpool.services` is imported, so
    users pay only for the fakes they use.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"service {service!r} needs the {module.partition('.')[0]!r} package, which is not "
            f"installed; install it with: pip install 'mockpool[{extra}]'",
            name=module,
        ) from exc


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
