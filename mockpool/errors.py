"""The error hierarchy of mockpool.

Every error names the service, the state the pool was in, and the likely fix. All are
re-exported from :mod:`mockpool`. Errors that fit a builtin category also inherit from it
(``AcquireTimeout`` is a ``TimeoutError``, ``UnknownServiceError`` a ``LookupError``,
``ServiceConfigError`` a ``ValueError``) so callers can catch the category they know.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = (
    "AcquireTimeout",
    "DependencyError",
    "HookTimeout",
    "MockPoolError",
    "PoolClosedError",
    "RecoveryFailedError",
    "ServiceConfigError",
    "UnknownServiceError",
)


class MockPoolError(Exception):
    """Base class of every error raised by mockpool itself."""


class UnknownServiceError(MockPoolError, LookupError):
    """Raised when a service name was never registered with the pool."""

    def __init__(self, name: str, registered: Iterable[str], *, pool: str = "") -> None:
        names = sorted(registered)
        self.name = name
        self.registered = tuple(names)
        self.suggestions = tuple(difflib.get_close_matches(name, names, n=3, cutoff=0.5))
        where = f" in pool {pool!r}" if pool else ""
        if self.suggestions:
            hint = "did you mean " + " or ".join(map(repr, self.suggestions)) + "?"
        elif names:
            hint = "registered: " + ", ".join(map(repr, names))
        else:
            hint = "no service is registered yet; call pool.register(ServiceSpec(...)) first"
        super().__init__(f"no service named {name!r}{where}; {hint}")

    def __str__(self) -> str:  # LookupError subclasses would otherwise repr-quote the message
        return str(self.args[0])


class AcquireTimeout(MockPoolError, TimeoutError):
    """Raised when no instance became available within the acquire timeout."""

    def __init__(
        self,
        service: str,
        timeout: float,
        *,
        size: int,
        in_use: int,
        waiting: int,
        max_size: int,
        creating: int = 0,
        max_total: int | None = None,
        advice: str | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.size = size
        self.in_use = in_use
        self.waiting = waiting
        self.max_size = max_size
        self.creating = creating
        self.max_total = max_total
        total = f", max_total={max_total}" if max_total is not None else ""
        if advice is None:
            advice = (
                f"the service is at max_size={max_size}: raise max_size, pass a longer timeout=, "
                "or look for tests that hold leases too long"
            )
        super().__init__(
            f"no {service!r} instance became available within {timeout:g} s "
            f"(size={size}, in_use={in_use}, waiting={waiting}, creating={creating}, "
            f"max_size={max_size}{total}); {advice}"
        )


#: The ``ServiceSpec`` field that bounds each hook.
TIMEOUT_FIELDS = {
    "factory": "create_timeout",
    "minimal": "create_timeout",
    "snapshot": "reset_timeout",
    "restore": "reset_timeout",
    "reset": "reset_timeout",
    "fingerprint": "reset_timeout",
    "health_check": "health_timeout",
    "destroy": "destroy_timeout",
}


class HookTimeout(MockPoolError, TimeoutError):
    """A hook (factory, reset, health check...) did not finish within its timeout."""

    def __init__(self, service: str, hook: str, timeout: float) -> None:
        self.service = service
        self.hook = hook
        self.timeout = timeout
        field = TIMEOUT_FIELDS.get(hook, "its timeout")
        super().__init__(
            f"service {service!r}: the {hook} hook did not finish within {timeout:g} s ({field}); "
            f"make it faster, or raise {field}= on the ServiceSpec"
        )


class PoolClosedError(MockPoolError):
    """Raised when a pool, or one of its services, is used after it was closed."""


class ServiceConfigError(MockPoolError, ValueError):
    """Raised when a :class:`~mockpool.ServiceSpec` or pool option has a bad value.

    Raised by ``ServiceSpec``, ``register`` and configuration loading, never later.
    """

    def __init__(self, field: str, value: object, problem: str, *, service: str = "") -> None:
        self.field = field
        self.value = value
        self.service = service
        who = f"service {service!r}: " if service else ""
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{who}{field}={shown} {problem}")


class RecoveryFailedError(MockPoolError):
    """Raised when every allowed recovery tier failed to produce an instance.

    The last tier's exception is chained as ``__cause__``.
    """

    def __init__(self, service: str, tiers: Iterable[str], cause: BaseException | None) -> None:
        self.service = service
        self.tiers = tuple(tiers)
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else "no instance"
        super().__init__(
            f"service {service!r} could not get a working instance; tried "
            f"{', '.join(self.tiers) or 'nothing'}; last error: {reason}. Fix the factory, or "
            f"allow degraded doubles with allow_degraded=True and a minimal= factory"
        )


class DependencyError(MockPoolError):
    """Raised by ``register`` when ``depends_on`` names an unknown service or forms a cycle."""
