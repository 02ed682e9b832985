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
        self, service: str, timeout: float, *, size: int, in_use: int, waiting: int, max_size: int
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.size = size
        self.in_use = in_use
        self.waiting = waiting
        self.max_size = max_size
        super().__init__(
            f"no {service!r} instance became available within {timeout:g} s "
            f"(size={size}, in_use={in_use}, waiting={waiting}, max_size={max_size}); "
            f"raise max_size, pass a longer timeout=, or look for tests that hold leases too long"
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
