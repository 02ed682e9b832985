"""mockpool: pooled, pre-warmed, self-healing test doubles for async Python test suites.

The public names load on first use (PEP 562): pytest imports this package to load the plugin
in every process, including those whose tests never use the pool (the xdist controller, a
project that does not use mockpool), and the pool's modules cost about 25 ms to import there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .clock import Clock as Clock
    from .clock import FakeClock as FakeClock
    from .clock import SystemClock as SystemClock
    from .errors import AcquireTimeout as AcquireTimeout
    from .errors import DependencyError as DependencyError
    from .errors import HookTimeout as HookTimeout
    from .errors import MockPoolError as MockPoolError
    from .errors import PoolClosedError as PoolClosedError
    from .errors import RecoveryFailedError as RecoveryFailedError
    from .errors import ServiceConfigError as ServiceConfigError
    from .errors import UnknownServiceError as UnknownServiceError
    from .lease import Lease as Lease
    from .metrics import PoolStats as PoolStats
    from .metrics import TierCounts as TierCounts
    from .pool import MockPool as MockPool
    from .report import Event as Event
    from .report import Report as Report
    from .spec import ServiceSpec as ServiceSpec

__version__ = "0.1.0"

__all__ = (
    "AcquireTimeout",
    "Clock",
    "DependencyError",
    "Event",
    "FakeClock",
    "HookTimeout",
    "Lease",
    "MockPool",
    "MockPoolError",
    "PoolClosedError",
    "PoolStats",
    "RecoveryFailedError",
    "Report",
    "ServiceConfigError",
    "ServiceSpec",
    "SystemClock",
    "TierCounts",
    "UnknownServiceError",
)

#: Where each public name is defined: imported from there when first asked for.
_LAZY = {
    "Clock": "clock",
    "FakeClock": "clock",
    "SystemClock": "clock",
    "AcquireTimeout": "errors",
    "DependencyError": "errors",
    "HookTimeout": "errors",
    "MockPoolError": "errors",
    "PoolClosedError": "errors",
    "RecoveryFailedError": "errors",
    "ServiceConfigError": "errors",
    "UnknownServiceError": "errors",
    "Lease": "lease",
    "PoolStats": "metrics",
    "TierCounts": "metrics",
    "MockPool": "pool",
    "Event": "report",
    "Report": "report",
    "ServiceSpec": "spec",
}

if not TYPE_CHECKING:  # hidden from type checkers, which would then accept any name

    def __getattr__(name: str) -> object:
        from ._lazy import lazy_attribute

        return lazy_attribute(__name__, _LAZY, name)

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
