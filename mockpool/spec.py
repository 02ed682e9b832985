"""``ServiceSpec``: what a service is and how to make, clean, check and recover its instances.

Validated when built: a bad field raises :class:`~mockpool.ServiceConfigError` naming the field
and the value, so mistakes surface at registration and never in the middle of a test run.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import ServiceConfigError

__all__ = ("Hook", "ServiceSpec")

#: A hook may be a plain function or a coroutine function; mockpool awaits what it returns
#: when that is awaitable.
Hook = Callable[..., Any]

_HOOKS = ("reset", "health_check", "snapshot", "restore", "destroy", "minimal", "bind", "fingerprint")
#: Called inline by the lease, in the task that enters or leaves it: never awaited.
_LEASE_HOOKS = ("on_acquire", "on_release")
#: Hooks that must be sync: ``bind`` (the lease binds inline too) and the lease hooks.
_INLINE_HOOKS = ("bind", *_LEASE_HOOKS)
#: The arguments each hook is called with, as named in ``_check_arity``'s message.
_HOOK_CALLS: dict[str, tuple[str, ...]] = {
    "reset": ("instance",),
    "health_check": ("instance",),
    "snapshot": ("instance",),
    "restore": ("instance", "state"),
    "destroy": ("instance",),
    "bind": ("instance",),
    "fingerprint": ("instance",),
    "on_acquire": ("handle",),
    "on_release": ("handle", "token"),
}
_TIMEOUTS = ("create_timeout", "reset_timeout", "health_timeout", "destroy_timeout")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    """How to make, reset, check, snapshot, recover and destroy one kind of test double.

    Every hook may be sync or async. ``factory`` takes no argument, or, for a service with
    ``depends_on``, one positional argument per member service in ``depends_on`` order.

    :param name: the name tests acquire it by.
    :param factory: makes a new instance.
    :param reset: runs on every release; the instance goes back to idle only if it succeeds.
    :param health_check: ``(instance) -> bool``; ``False`` or an exception means unhealthy.
    :param snapshot: ``(instance) -> state``; taken right after creation (the pristine state).
    :param restore: ``(instance, state)``; recovery tier 1 restores the pristine snapshot.
    :param destroy: closes an instance for good.
    :param minimal: tier-3 fallback factory, used only with ``allow_degraded=True``.
    :param bind: ``(instance) -> handle`` for doubles whose client is bound to an event loop;
        called once per instance and loop, and the handle is what the test receives.
    :param fingerprint: ``(instance) -> value`` that tells a used instance from a new one:
        everything a test can leave behind, data and settings alike (pragmas, options,
        callbacks, attributes). With ``isolation_verify`` the pool compares it after every
        reset with the value taken at creation. Default: ``snapshot``.
    :param on_acquire: ``(handle) -> token``, sync: called in the acquiring task once the lease
        holds its instance, for per-task state such as a context variable. A group lease calls
        its members' hooks first (each on its member's handle, in ``depends_on`` order), then
        the group's; ``on_release`` runs in the reverse order. An exception sends the instance
        to recovery.
    :param on_release: ``(handle, token)``, sync: called in the releasing task as the lease
        ends, before the reset, with what ``on_acquire`` returned (None without it). An
        exception sends the instance to recovery and propagates from the ``async with``.
    :param min_size: instances kept alive even when idle.
    :param max_size: bound on instances alive at once for this service.
    :param depends_on: services this one is built on; leased with it as one unit.
    :param allow_degraded: permit recovery tiers 3 (``minimal``) and 4 (emergency stub).
    :param variants: alternative factories the adaptation supervisor may switch to.
    :param acquire_timeout: default wait bound for ``acquire`` (``None``: the pool's default).
    :param health_interval: seconds between background checks of idle instances.
    :param check_idle_after: health-check an instance on acquire when it sat idle longer than
        this many seconds (``None``: only the background checks, until the adaptation
        supervisor turns check-on-acquire on).
    """

    name: str
    factory: Hook
    reset: Hook | None = None
    health_check: Hook | None = None
    snapshot: Hook | None = None
    restore: Hook | None = None
    destroy: Hook | None = None
    minimal: Hook | None = None
    bind: Hook | None = None
    fingerprint: Hook | None = None
    on_acquire: Callable[[Any], Any] | None = None
    on_release: Callable[[Any, Any], object] | None = None
    min_size: int = 0
    max_size: int = 64
    depends_on: tuple[str, ...] = ()
    allow_degraded: bool = False
    variants: Mapping[str, Hook] = field(default_factory=lambda: MappingProxyType({}))
    acquire_timeout: float | None = None
    create_timeout: float = 30.0
    reset_timeout: float = 5.0
    health_timeout: float = 2.0
    destroy_timeout: float = 5.0
    health_interval: float = 2.0
    check_idle_after: float | None = None

    def __post_init__(self) -> None:
        name: object = self.name
        if not isinstance(name, str) or not name.strip():
            raise ServiceConfigError("name", name, "must be a non-empty string")
        _check_callable("factory", self.factory, name)
        for hook in _HOOKS:
            value = getattr(self, hook)
            if value is not None:
                _check_callable(hook, value, name)
                if hook != "minimal":  # a factory: checked below, once depends_on is known
                    _check_arity(hook, value, _HOOK_CALLS[hook], name)
        for hook in _INLINE_HOOKS:
            value = getattr(self, hook)
            if value is not None:
                if hook in _LEASE_HOOKS:
                    _check_callable(hook, value, name)
                    _check_arity(hook, value, _HOOK_CALLS[hook], name)
                if inspect.iscoroutinefunction(value):
                    raise ServiceConfigError(
                        hook,
                        value,
                        "must be a sync function: the lease calls it inline, unawaited",
                        service=name,
                    )
        for size in ("min_size", "max_size"):
            value = getattr(self, size)
            if not _is_count(value):
                raise ServiceConfigError(size, value, "must be a whole number >= 0", service=name)
        if self.max_size < 1:
            raise ServiceConfigError("max_size", self.max_size, "must be >= 1", service=name)
        if self.min_size > self.max_size:
            raise ServiceConfigError(
                "min_size",
                self.min_size,
                f"must be <= max_size ({self.max_size}); lower min_size or raise max_size",
                service=name,
            )
        deps: object = self.depends_on
        if isinstance(deps, str):
            raise ServiceConfigError(
                "depends_on", deps, f"is a string; write depends_on=({deps!r},)", service=name
            )
        if not isinstance(deps, tuple):
            try:
                deps = tuple(deps)  # type: ignore[arg-type]  # any iterable; checked below
            except TypeError:
                raise ServiceConfigError(
                    "depends_on", deps, "must be a tuple of service names", service=name
                ) from None
            object.__setattr__(self, "depends_on", deps)
        for dep in deps:
            if not isinstance(dep, str) or not dep:
                raise ServiceConfigError(
                    "depends_on", deps, "must hold non-empty service names", service=name
                )
        if len(set(deps)) != len(deps):
            raise ServiceConfigError("depends_on", deps, "names a service twice", service=name)
        # A factory that cannot take the members would fail at every creation, surfacing as a
        # RecoveryFailedError at the first acquire: refused here instead.
        _check_arity("factory", self.factory, self.depends_on, name)
        if self.minimal is not None:
            _check_arity("minimal", self.minimal, self.depends_on, name)
        if (self.snapshot is None) != (self.restore is None):
            given, missing = ("snapshot", "restore") if self.restore is None else ("restore", "snapshot")
            raise ServiceConfigError(
                given, getattr(self, given), f"needs {missing}= too: the two work as a pair", service=name
            )
        if not isinstance(self.allow_degraded, bool):  # type: ignore[redundant-expr,unused-ignore]
            raise ServiceConfigError(
                "allow_degraded", self.allow_degraded, "must be True or False", service=name
            )
        if not isinstance(self.variants, Mapping):
            raise ServiceConfigError(
                "variants", self.variants, "must map a variant name to a factory", service=name
            )
        for key, variant in self.variants.items():
            if not _is_name(key):
                raise ServiceConfigError("variants", key, "keys must be non-empty names", service=name)
            _check_callable(f"variants[{key!r}]", variant, name)
            _check_arity(f"variants[{key!r}]", variant, self.depends_on, name)
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        for optional in ("acquire_timeout", "check_idle_after"):
            if getattr(self, optional) is not None:
                _check_positive(optional, getattr(self, optional), name)
        for timeout in (*_TIMEOUTS, "health_interval"):
            _check_positive(timeout, getattr(self, timeout), name)

    @property
    def is_group(self) -> bool:
        """True when the service is built from other services (``depends_on``)."""
        return bool(self.depends_on)


def _check_callable(field_name: str, value: object, service: str) -> None:
    if inspect.iscoroutine(value):
        value.close()  # it will never be awaited; closing avoids a "never awaited" warning
        raise ServiceConfigError(
            field_name,
            value,
            "is a coroutine object, not a callable; pass the function itself: "
            f"{field_name}=make_{service.replace('-', '_')}, not "
            f"{field_name}=make_{service.replace('-', '_')}()",
            service=service,
        )
    if isinstance(value, Awaitable) or not callable(value):
        raise ServiceConfigError(
            field_name, value, "must be a callable (a function or a class)", service=service
        )


def _check_arity(field_name: str, value: Any, args: tuple[str, ...], service: str) -> None:
    """Refuse a hook that cannot be called with ``args`` (positional: the names only label them)."""
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return  # a builtin without a signature: nothing to check
    try:
        signature.bind(*args)
    except TypeError as exc:
        call = f"{field_name}({', '.join(args)})"
        if field_name in ("factory", "minimal") or field_name.startswith("variants"):
            why = (
                f"a service with depends_on={args!r} gets one argument per member, in that order"
                if args
                else "a service without depends_on calls it with no argument"
            )
        else:
            why = "mockpool calls it with these arguments"
        raise ServiceConfigError(
            field_name, value, f"cannot be called as {call} ({exc}); {why}", service=service
        ) from None


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_positive(field_name: str, value: object, service: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value) or value <= 0:
        raise ServiceConfigError(field_name, value, "must be a number of seconds > 0", service=service)
