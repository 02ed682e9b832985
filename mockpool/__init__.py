"""mockpool: pooled, pre-warmed, self-healing test doubles for async Python test suites."""

from __future__ import annotations

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
