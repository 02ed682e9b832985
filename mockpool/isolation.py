"""Isolation: telling a used instance from a new one.

A service's ``fingerprint`` hook (or, without one, its ``snapshot``) returns everything a test
can leave behind. In isolation-verify mode the pool takes it when an instance is made and
compares it after every reset; :func:`difference` says, in a line, what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import MockPoolError
from .hooks import call_hook

if TYPE_CHECKING:
    from .spec import ServiceSpec

__all__ = ("IsolationError", "difference", "fingerprint_hook", "take_fingerprint")


class IsolationError(MockPoolError):
    """A reset left state behind: the instance's fingerprint differs from its pristine one."""

    def __init__(self, service: str, detail: str) -> None:
        self.service = service
        self.detail = detail
        super().__init__(
            f"service {service!r}: isolation check failed: after reset the instance differs from "
            f"a new one ({detail}); the reset hook misses this state: rebuild it from the pristine "
            "template at each lease, or reset it explicitly"
        )


def fingerprint_hook(spec: ServiceSpec) -> Any:
    """The hook that fingerprints ``spec``'s instances, or None when it has neither."""
    return spec.fingerprint if spec.fingerprint is not None else spec.snapshot


async def take_fingerprint(spec: ServiceSpec, instance: Any) -> Any:
    hook = fingerprint_hook(spec)
    if hook is None:
        return None
    return await call_hook(hook, instance, timeout=spec.reset_timeout, service=spec.name, name="fingerprint")


def difference(expected: Any, actual: Any) -> str:
    """What differs between a pristine fingerprint and a current one, in a line."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        parts = [
            f"{key}: fresh {_short(expected.get(key, _MISSING))} != now {_short(actual.get(key, _MISSING))}"
            for key in [*expected, *(k for k in actual if k not in expected)]
            if expected.get(key, _MISSING) != actual.get(key, _MISSING)
        ]
        return "; ".join(parts)
    if isinstance(expected, bytes) and isinstance(actual, bytes):
        at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), None)
        where = f"first at byte {at}" if at is not None else "one is a prefix of the other"
        return f"{len(expected)} bytes fresh vs {len(actual)} bytes now, {where}"
    return f"fresh {_short(expected)} != now {_short(actual)}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
