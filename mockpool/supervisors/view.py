"""``PoolView``: the pool as the supervisors see it, a narrow interface.

No supervisor imports the pool module: they read and act through this protocol (and through
each service's :class:`~mockpool.service.ServicePool`), so the pool depends on the supervisors
and not the other way round. :class:`~mockpool.MockPool` satisfies it; mypy checks that where
the pool starts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..clock import Clock
    from ..history import History, UsageRecorder
    from ..report import Event
    from ..service import ServicePool

__all__ = ("LoopSample", "PoolView")


class LoopSample(Protocol):
    """A loop's runtime, as the sizing supervisor samples its load."""

    busy: float | None
    lease_cost: float | None
    load_since: float | None
    creation_cpu: float
    creation_blocked: float


class PoolView(Protocol):
    """What the supervisors read of, and do to, a pool."""

    #: Set by the start-up warm.
    warmed: dict[str, int]
    warmup_s: float | None

    @property
    def name(self) -> str: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def seed(self) -> int: ...
    @property
    def supervisor_errors(self) -> dict[str, int]: ...
    @property
    def adaptation(self) -> object:
        """``AdaptationConfig`` or None (checked where used)."""

    @property
    def scaling(self) -> object:
        """``ScalingConfig`` or None (checked where used)."""

    @property
    def memory_budget_mb(self) -> float | None: ...
    @property
    def leak_threshold(self) -> float | None: ...
    @property
    def history(self) -> History: ...
    @property
    def recorder(self) -> UsageRecorder: ...
    @property
    def closed(self) -> bool: ...
    @property
    def service_pools(self) -> Mapping[str, ServicePool]: ...
    def record_event(self, service: str, trigger: str, response: str) -> Event: ...
    def sample_usage(self) -> None: ...
    def current_runtime(self) -> LoopSample | None: ...
