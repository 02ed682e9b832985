"""Helpers for testing code that uses mockpool, and for testing your own doubles.

* :func:`check_double_contract`: a reset instance cannot be told apart from a fresh one, as
  its ``snapshot`` hook sees it.
* :func:`check_isolation`: a dirtying battery. Each :class:`Dirtier` does what a test might do
  to a double in one lease; the next lease on the same instance must be pristine.
* :class:`~mockpool.clock.FakeClock`, re-exported for tests that drive the pool's time.
"""

from __future__ import annotations

from ..clock import FakeClock
from .battery import Dirtier, IsolationCase, IsolationReport, check_isolation
from .contract import ContractError, check_double_contract

__all__ = (
    "ContractError",
    "Dirtier",
    "FakeClock",
    "IsolationCase",
    "IsolationReport",
    "check_double_contract",
    "check_isolation",
)
