"""``MockPool``: the registry of services, the public entry point, and the owner of the
per-loop runtimes that run background work.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio

from .clock import Clock, SystemClock
from .core import Budget, ServiceCore
from .errors import DependencyError, MockPoolError, PoolClosedError, ServiceConfigError, UnknownServiceError
from .history import History, MockPoolHistoryWarning, RunRecord, UsageRecorder
from .history.format import OUTSIDE_TESTS
from .hooks import running_loop
from .isolation import IsolationError
from .lease import Lease
from .metrics import LoopBlocks, PoolStats
from .nesting import Holds
from .recovery import recover_entry
from .report import Event, Report
from .runtime import Runtime
from .service import ServicePool
from .spec import ServiceSpec
from .supervisors import AdaptationConfig, ScalingConfig, start_all, warming

if TYPE_CHECKING:
    from typing import Self


__all__ = ("MockPool",)

logger = logging.getLogger("mockpool")

F = TypeVar("F", bound=Callable[..., Any])

# Acquire waits this long by default: long enough for a slow factory, short enough that a
# leaked lease fails the waiting test instead of hanging the run.
DEFAULT_TIMEOUT = 30.0

#: Loops other than the pool's first start its supervisors once they have lived this long.
GUEST_SUPERVISE_AFTER_S = 0.1


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Unset(enum.Enum):
    UNSET = "unset"


_UNSET = _Unset.UNSET
_pool_numbers = iter(range(1, 1 << 62))


class MockPool:
    """Pooled, pre-warmed, self-healing test doubles.

    ::

        pool = MockPool()
        pool.register(ServiceSpec(name="redis", factory=make_redis, reset=flush))
        async with pool:
            async with pool.acquire("redis") as redis:
                ...

    The pool also works without ``async with`` (the pytest plugin's session fixture does
    this): the first background need in an event loop starts that loop's runtime lazily.

    :param name: used in errors, logs and the report (default ``pool-1``, ``pool-2``...).
    :param max_total: pool-wide bound on live instances, across services.
    :param default_timeout: acquire wait bound when neither the call nor the spec gives one.
    :param clock: time source of supervisors and metrics (see :class:`~mockpool.clock.FakeClock`).
    :param close_timeout: how long closing waits for leases to end before destroying anyway.
    :param isolation_verify: after each reset, compare the snapshot with the pristine one.
    :param track_leases: record where each lease was acquired (leak reports name the line).
    :param supervise: run the supervisors (health, scaling, adaptation, leaks) in background.
    :param adaptation: thresholds of the adaptation supervisor (``AdaptationConfig``).
    :param scaling: knobs of the scaling supervisor (``ScalingConfig``).
    :param leak_threshold: seconds after which a held lease is reported as a leak (None: off;
        turns lease tracking on).
    :param memory_budget_mb: process RSS above which idle instances are evicted (None: off).
    :param seed: seeds the supervisors' random jitter, so that a run reproduces.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        max_total: int | None = None,
        default_timeout: float | None = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
        close_timeout: float = 5.0,
        isolation_verify: bool = False,
        track_leases: bool = False,
        supervise: bool = True,
        history: History | str | os.PathLike[str] | None = None,
        history_window_s: float = 1.0,
        config: Any = None,
        adaptation: AdaptationConfig | None = None,
        scaling: ScalingConfig | None = None,
        leak_threshold: float | None = None,
        memory_budget_mb: float | None = None,
        seed: int = 0,
    ) -> None:
        if max_total is not None and not (
            _is_number(max_total) and math.isfinite(max_total) and int(max_total) == max_total >= 1
        ):
            raise ServiceConfigError("max_total", max_total, "must be a whole number >= 1 or None")
        if name is not None and not (isinstance(name, str) and name.strip()):  # type: ignore[redundant-expr,unused-ignore]
            raise ServiceConfigError("name", name, "must be a non-empty string or None")
        for flag, given in (
            ("isolation_verify", isolation_verify),
            ("track_leases", track_leases),
            ("supervise", supervise),
        ):
            # A truthy string ('false', from a config file) would silently mean True.
            if not isinstance(given, bool):  # type: ignore[redundant-expr,unused-ignore]
                raise ServiceConfigError(flag, given, "must be True or False")
        if not (_is_number(history_window_s) and math.isfinite(history_window_s) and history_window_s > 0):
            raise ServiceConfigError("history_window_s", history_window_s, "must be seconds > 0")
        if history is not None and not isinstance(history, History | str | os.PathLike):
            raise ServiceConfigError("history", history, "must be a file path, a History or None")
        if isinstance(history, str | os.PathLike) and not os.fspath(history):
            raise ServiceConfigError(
                "history", history, "is an empty path; give a file, e.g. '.mockpool-history.json'"
            )
        if clock is not None and not (
            callable(getattr(clock, "now", None)) and callable(getattr(clock, "sleep", None))
        ):
            raise ServiceConfigError(
                "clock", clock, "must have now() and sleep(seconds), like mockpool.FakeClock"
            )
        if default_timeout is not None and not (_is_number(default_timeout) and default_timeout > 0):
            raise ServiceConfigError("default_timeout", default_timeout, "must be seconds > 0 or None")
        if not (_is_number(close_timeout) and close_timeout >= 0):
            raise ServiceConfigError("close_timeout", close_timeout, "must be seconds >= 0")
        self.name = name if name is not None else f"pool-{next(_pool_numbers)}"
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.default_timeout = default_timeout
        self.close_timeout = float(close_timeout)
        self.isolation_verify = isolation_verify
        if leak_threshold is not None and not (_is_number(leak_threshold) and leak_threshold > 0):
            raise ServiceConfigError("leak_threshold", leak_threshold, "must be seconds > 0 or None")
        if memory_budget_mb is not None and not (_is_number(memory_budget_mb) and memory_budget_mb > 0):
            raise ServiceConfigError("memory_budget_mb", memory_budget_mb, "must be megabytes > 0 or None")
        for option, value, kind in (
            ("adaptation", adaptation, AdaptationConfig),
            ("scaling", scaling, ScalingConfig),
        ):
            if value is not None and not isinstance(value, kind):
                raise ServiceConfigError(
                    option, value, f"must be a mockpool.supervisors.{kind.__name__} or None"
                )
        #: Supervisor settings (``None``: defaults); see ``mockpool.supervisors``.
        self.adaptation = adaptation
        self.scaling = scaling
        self.leak_threshold = leak_threshold
        self.memory_budget_mb = memory_budget_mb
        # Leak reports name where each lease was acquired, which needs lease tracking.
        self.track_leases = track_leases or leak_threshold is not None
        self.supervise = supervise
        if not isinstance(seed, int) or isinstance(seed, bool):  # type: ignore[redundant-expr,unused-ignore]
            raise ServiceConfigError("seed", seed, "must be an integer")
        self.seed = seed
        self.budget = Budget(max_total)
        #: When sync factories held the loop: spans left out of the leases' own work.
        self.blocks = LoopBlocks()
        #: Leases each task queued for and holds: nested leases' queues (sizing's upstream).
        self.holds: Holds[ServicePool] = Holds()
        if max_total is not None:
            self.budget.kept_for_others = self.kept_for_others
        self.service_pools: dict[str, ServicePool] = {}
        #: Unregistered services whose leased instances are still out: closed with the pool.
        self._retired: list[ServicePool] = []
        self.events: list[Event] = []
        self.supervisor_errors: dict[str, int] = {}
        self.config = config
        self._state = _State.NEW
        #: Who starts and closes the pool, when not its user (the pytest plugin's session pool):
        #: ``start`` (``async with pool``) is refused, as its end would close the pool.
        self._managed_by: str | None = None
        self._runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = (
            weakref.WeakKeyDictionary()
        )
        #: The loop the pool started in (or first ran in): its supervisors start at once.
        self._home: weakref.ref[asyncio.AbstractEventLoop] | None = None
        #: What a closing pool waits on for its leases to end, and the loop it waits in.
        self._lease_ended: tuple[asyncio.Event, asyncio.AbstractEventLoop] | None = None
        #: The task that closes the pool (it outlives a cancelled ``aclose``).
        self._close_task: asyncio.Task[None] | None = None
        self._history_saved = False
        #: Runtimes of loops closed under them (see ``settle_closed_loops``).
        self._abandoned: list[Runtime] = []
        #: Instances taken off the books by closing and not destroyed yet.
        self._undestroyed: list[tuple[ServicePool, Any]] = []
        #: The first of them was being destroyed (and was counted) when a close was cut short.
        self._destroy_begun = False
        #: Closes begun: a close whose loop paused under it finds a newer one took over.
        self._close_round = 0
        self._started_at = self.clock.now()
        #: What earlier runs recorded (empty without history); drives warming and prediction.
        self.history_path: Path | None = None
        if isinstance(history, History):
            self.history = history
        elif history is not None:
            # A file this version cannot read is kept; the run then uses the one beside it.
            self.history, self.history_path = History.open(history)
        else:
            self.history = History()
        #: What this run records, fed by the usage sampler once per window.
        self.recorder = UsageRecorder(window_s=history_window_s)
        self._sampled_at = 0.0
        #: Services each test used, by test id, and those used outside tests under
        #: ``OUTSIDE_TESTS`` (filled when leases are tracked).
        self.test_services: dict[str, set[str]] = {}
        self._isolation_failures: dict[str, list[IsolationError]] = {}
        self.warmup_s: float | None = None
        #: Instances per service after the start-up warm (what history predicted, in effect).
        self.warmed: dict[str, int] = {}

    # == registry =============================================================================

    def register(self, spec: ServiceSpec) -> ServiceSpec:
        """Add a service. Raises ``ServiceConfigError`` for a duplicate name and
        ``DependencyError`` for an unknown or cyclic ``depends_on``."""
        if not isinstance(spec, ServiceSpec):
            raise ServiceConfigError(
                "spec", spec, "must be a ServiceSpec; write pool.register(ServiceSpec(name=..., factory=...))"
            )
        self._check_open("register a service")
        if spec.name in self.service_pools:
            raise ServiceConfigError(
                "name",
                spec.name,
                "is already registered in this pool; unregister it first",
                service=spec.name,
            )
        if spec.name in spec.depends_on:
            raise DependencyError(f"service {spec.name!r}: depends_on names the service itself (a cycle)")
        missing = [dep for dep in spec.depends_on if dep not in self.service_pools]
        if missing:
            # Members must be registered first, which is also what makes a cycle impossible.
            raise DependencyError(
                f"service {spec.name!r} depends on {', '.join(map(repr, missing))}, which "
                f"{'is' if len(missing) == 1 else 'are'} not registered; register "
                f"{'it' if len(missing) == 1 else 'them'} first (registered: "
                f"{', '.join(map(repr, sorted(self.service_pools))) or 'none'})"
            )
        self._check_fits_max_total(spec)
        svc = ServicePool(self, spec, recover_entry)
        svc.adopt_members(tuple(self.service_pools[dep] for dep in spec.depends_on))
        self.service_pools[spec.name] = svc
        return spec

    def footprint(self, name: str) -> int:
        """Instances one instance of ``name`` takes: itself and, for a group, its members'."""
        spec = self.service_pools[name].spec
        return 1 + sum(self.footprint(dep) for dep in spec.depends_on)

    def _check_fits_max_total(self, spec: ServiceSpec) -> None:
        max_total = self.budget.max_total
        if max_total is None:
            return
        each = 1 + sum(self.footprint(dep) for dep in spec.depends_on)
        members = f" (itself and its members {', '.join(spec.depends_on)})" if spec.depends_on else ""
        if each > max_total:
            raise ServiceConfigError(
                "depends_on",
                spec.depends_on,
                f"makes one instance take {each} instances{members}, more than the pool's "
                f"max_total={max_total}; raise max_total",
                service=spec.name,
            )
        if spec.min_size * each > max_total:
            raise ServiceConfigError(
                "min_size",
                spec.min_size,
                f"needs {spec.min_size * each} instances{members}, more than the pool's "
                f"max_total={max_total}; lower min_size or raise max_total",
                service=spec.name,
            )

    @overload
    def service(self, name: F, /) -> F: ...
    @overload
    def service(self, name: str | None = None, /, **options: Any) -> Callable[[F], F]: ...

    def service(self, name: Any = None, /, **options: Any) -> Any:
        """Decorator form of :meth:`register`: the function is the factory.

        ``@pool.service("jwt", max_size=32)`` or plain ``@pool.service`` (named after the
        function).
        """
        if callable(name):
            self.register(ServiceSpec(name=name.__name__, factory=name))
            return name

        # ``name=`` as a keyword too (@pool.service(name="jwt")), as ServiceSpec spells it.
        given = options.pop("name", None) if name is None else name

        def decorate(factory: F) -> F:
            self.register(ServiceSpec(name=given or factory.__name__, factory=factory, **options))
            return factory

        return decorate

    def unregister(self, name: str) -> None:
        """Remove a service. New acquires fail with ``UnknownServiceError``; waiters get
        ``PoolClosedError``; idle instances are destroyed now and leased ones on release."""
        svc = self._service(name)
        dependents = [s.name for s in self.service_pools.values() if name in s.spec.depends_on]
        if dependents:
            raise DependencyError(
                f"service {name!r} cannot be unregistered: {', '.join(map(repr, dependents))} "
                "depend on it; unregister those first"
            )
        del self.service_pools[name]
        self._retired = [s for s in self._retired if s.core.entries]  # drained ones are done
        self._retired.append(svc)
        core = svc.core
        core.closed = True
        core.fail_waiters(svc.closed_error())
        while (entry := core.take_idle_for_removal()) is not None:
            svc.destroy_soon(entry)

    async def resize(self, name: str, *, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change a service's bounds while running; grows to the new ``min_size`` at once."""
        svc = self._service(name)
        new_min = svc.core.min_size if min_size is None else min_size
        new_max = svc.core.max_size if max_size is None else max_size
        spec = svc.spec
        # Validate through ServiceSpec so the messages are the same as at registration.
        ServiceSpec(
            name=spec.name,
            factory=spec.factory,
            depends_on=spec.depends_on,  # a group's factory is checked against its members
            min_size=new_min,
            max_size=new_max,
        )
        async with self._runtime().structure.writer_lock:
            svc.core.min_size, svc.core.max_size = new_min, new_max
            while svc.core.size > new_max and (entry := svc.core.take_idle_for_removal()) is not None:
                svc.destroy_soon(entry)
            svc.grow(new_min - svc.core.size - svc.core.creating)
            svc.ensure_creations()

    @property
    def services(self) -> tuple[str, ...]:
        """Names of the registered services, in registration order."""
        return tuple(self.service_pools)

    def _service(self, name: str) -> ServicePool:
        try:
            return self.service_pools[name]
        except KeyError:
            if not isinstance(name, str):
                raise TypeError(f"a service name is a str, not {type(name).__name__}: {name!r}") from None
            raise UnknownServiceError(name, self.service_pools, pool=self.name) from None

    # == acquiring ============================================================================

    def acquire(self, name: str, *, timeout: float | _Unset | None = _UNSET) -> Lease[Any]:
        """Lease an instance of ``name``: ``async with pool.acquire("redis") as redis:``.

        :param timeout: seconds to wait for an instance (``None``: no bound); by default the
            spec's ``acquire_timeout``, else the pool's ``default_timeout``.
        :raises UnknownServiceError: no service of that name.
        :raises PoolClosedError: the pool is closed.
        :raises AcquireTimeout: no instance became available in time (on entering).
        """
        svc = self.service_pools.get(name)
        if svc is None:
            svc = self._service(name)
        if self._state is _State.CLOSED or self._state is _State.CLOSING:
            raise PoolClosedError(
                f"pool {self.name!r} is {self._state.value}; acquire inside 'async with pool:'"
            )
        if timeout is _UNSET:
            return Lease(svc, svc.timeout)
        if timeout is not None and not (_is_number(timeout) and timeout >= 0):
            raise ServiceConfigError("timeout", timeout, "must be seconds >= 0 or None", service=name)
        return Lease(svc, timeout)

    # == background work ======================================================================

    def spawn(self, fn: Callable[..., Any], *args: Any, on_drop: Callable[[], None] | None = None) -> None:
        """Run ``fn(*args)`` in the running loop's runtime, starting that runtime if needed;
        ``on_drop`` runs instead if that runtime ends before the task started."""
        self._runtime().spawn(fn, *args, on_drop=on_drop)

    def start_task(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None:
        """From a loop callback: run ``fn(*args)`` in a task of the running loop, settled with
        that loop's runtime (see :meth:`Runtime.start_task`)."""
        self._runtime().start_task(fn, *args, name=name)

    def _runtime(self) -> Runtime:
        loop = running_loop(self.name, "background work", "pool")
        runtime = self._runtimes.get(loop)
        if runtime is None or not runtime.running:
            if self._state is _State.CLOSED:
                raise PoolClosedError(f"pool {self.name!r} is closed")
            self.settle_closed_loops()
            # Settling may have started this loop's runtime itself (what a closed loop's work
            # hands back may need one: a group member's async reset). Replaced by a second, it
            # ran unknown to the pool: supervisors twice over, and work no close or abandon
            # would settle.
            runtime = self._runtimes.get(loop)
            if runtime is None or not runtime.running:
                if self._home is None:
                    self._home = weakref.ref(loop)
                runtime = Runtime(self, loop)
                self._runtimes[loop] = runtime
        return runtime

    def fair_share(self, svc: ServicePool) -> int | None:
        """How many instances ``svc`` may have under ``max_total`` (None: no bound): its
        share of the bound among the services this run uses, and never so many that a
        registered service not used yet would find no room for its first instance (it would
        have to evict another service's, and the services would take turns: churn). A service
        counts as used from its first acquire on, even between leases. A group's share counts
        its members' instances too."""
        max_total = self.budget.max_total
        if max_total is None:
            return None
        used = unused = 0
        for other in self.service_pools.values():
            if other is svc or other.metrics.acquisitions or other.core.waiting or other.core.size:
                used += 1
            else:
                unused += self.footprint(other.name)
        each = self.footprint(svc.name)
        share = max_total // (used * each)
        free = max_total - self.budget.total - unused  # what others' first instances keep
        return max(1, min(share, svc.core.size + svc.core.creating + free // each))

    def settled_size(self, name: str) -> int:
        """The size history says ``name`` settled at in earlier runs (0 without history)."""
        return self.history.settled(name)

    def leases_ended(self) -> int:
        """Leases ended so far, all services together (the stall check's sign of progress)."""
        return sum(svc.metrics.holds.count for svc in self.service_pools.values())

    def kept_for_others(self, core: ServiceCore, lasting: bool = False) -> int:
        """Slots under ``max_total`` that ``core`` may not grow into: one for each other
        service with no instance (alive or being created), at most half the bound.

        So a service can always make its first instance, and tests that hold one service's
        lease while they wait for another's (nested, in a fixed order) cannot deadlock on the
        bound: without it the first service used took every slot for tests that then waited
        for a service with none and nothing idle to evict. A service's own first instance is
        not held back (first come); the cap keeps a pool with many registered services and a
        small bound from pinning the used ones at one instance each. ``lasting``: a waiter of
        ``core`` stalled for long (its holders may wait for a second lease of it) may take a
        slot kept for a service nobody waits for yet. Instances lent to groups are none of a
        service's own: with only those, its tests have no instance, and its next is a first."""
        if len(core.entries) - core.lent + core.creating <= 0:
            return 0
        kept = 0
        for other in self.service_pools.values():
            oc = other.core
            if oc is core or oc.closed or len(oc.entries) + oc.creating or (lasting and not oc.waiters):
                continue
            kept += 1
        max_total = self.budget.max_total
        return kept if max_total is None else min(kept, max_total // 2)

    def loop_load(self) -> tuple[float | None, float | None, float | None]:
        """The running loop thread's busy share over the last sampling window, the share of its
        time one held lease takes (the sizing supervisor measures both), and when that window
        began on the pool's clock; None when not measured."""
        loop = asyncio._get_running_loop()
        runtime = self._runtimes.get(loop) if loop is not None else None
        if runtime is None:
            return (None, None, None)
        return (runtime.busy, runtime.lease_cost, runtime.load_since)

    def current_runtime(self) -> Runtime | None:
        """The runtime of the running loop, if it has one (no runtime is started)."""
        loop = asyncio._get_running_loop()
        return self._runtimes.get(loop) if loop is not None else None

    def settle_closed_loops(self) -> None:
        """Settle the background work of loops that were closed without cancelling it (a
        runner's choice, not ours): reservations are released, entries parked for recovery."""
        for loop, runtime in list(self._runtimes.items()):
            if loop.is_closed():
                runtime.abandon()
                # Kept, with the coroutines frozen in it: never finalized, never run twice.
                self._abandoned.append(runtime)

    def end_closed_holders(self) -> None:
        """End the leases of tasks left holding them in loops closed without cancelling them
        (pytest-asyncio 0.23). ``holds`` keeps each task that holds a lease it queued for: such
        a task was never collected, so its ``async with`` blocks never ended and its instances
        never came back. It can never run again: its coroutine is closed, as its collection
        would close it, and its blocks end and release (an async reset runs in this loop)."""
        by_task = self.holds.by_task
        for task in [task for task in by_task if task.get_loop().is_closed()]:
            del by_task[task]
            try:
                task.get_coro().close()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # its own cleanup failed (pytest.fail in on_release):
                # that task's, not the acquiring one's, as when collected (then unraisable)
                logger.warning(
                    "pool %r: task %r, left holding a lease in an event loop closed without "
                    "cancelling it, failed as its blocks were ended: %r; end or await the tasks a "
                    "test starts before the test ends",
                    self.name,
                    task.get_name(),
                    exc,
                )

    def _runtime_ended(self, runtime: Runtime) -> None:
        if self._runtimes.get(runtime.loop) is runtime:
            del self._runtimes[runtime.loop]
        # The usage sampler is a supervisor, and a test's own loop ends before it starts
        # (``_supervise_later``): sampled as such loops end, once a window has passed, the
        # run's demand per window is still recorded window by window.
        if self.elapsed() - self._sampled_at >= self.recorder.window_s:
            self.sample_usage()

    def enter_loop(self) -> None:
        """A test starts in the running loop (the pytest plugin calls this first in each test's
        coroutine): give the loop its supervisors when it should have them, and record usage.

        The pool's own loop (and any loop, with a ``leak_threshold``) gets its runtime now.
        Another loop, a test's own under pytest-asyncio's default, gets a timer instead: its
        runtime starts, supervisors and all, once the loop has lived
        ``GUEST_SUPERVISE_AFTER_S``, unless background work started it first. Such a loop
        usually ends within milliseconds: a runtime (a host task and its task group, made
        and cancelled) cost 0.23 ms a test, as much as the rest of a pooled lease, for
        supervisors that never started. What a short loop needs (creations for its waiters,
        stall checks, resets) starts the runtime itself."""
        if not self.supervise or self._state in (_State.CLOSING, _State.CLOSED):
            return
        loop = running_loop(self.name, "enter_loop", "pool")
        runtime = self._runtimes.get(loop)
        if runtime is not None and runtime.running:
            return
        # The usage sampler is a supervisor, and short loops end before it starts: sampled
        # here, once a window has passed, the run's demand is still recorded window by window.
        if self.elapsed() - self._sampled_at >= self.recorder.window_s:
            self.sample_usage()
        if self._home is None or loop is self._home() or self.leak_threshold is not None:
            self._runtime()
        else:
            # The loop's own clock measures the loop's life; a timer left when the loop closes
            # is dropped with it.
            loop.call_later(GUEST_SUPERVISE_AFTER_S, self._guest_due, loop)

    def _guest_due(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        runtime = self._runtimes.get(loop)
        if runtime is None or not runtime.running:
            self._runtime().supervise_now = True

    def _start_supervisors(self, runtime: Runtime) -> None:
        if not self.supervise or self._state in (_State.CLOSING, _State.CLOSED):
            return
        if (
            (self._home is not None and runtime.loop is self._home())
            or self.leak_threshold is not None
            or runtime.supervise_now
        ):
            # Leak detection asked for: held past a threshold that may be shorter than the
            # delay below, a lease is reported in a test's own loop too.
            start_all(self, runtime)
        else:
            runtime.spawn(self._supervise_later, runtime, name=f"mockpool[{self.name}] supervisors")

    async def _supervise_later(self, runtime: Runtime) -> None:
        """Start the supervisors of another loop than the pool's first once it has lived
        ``GUEST_SUPERVISE_AFTER_S``. Under pytest-asyncio's default each test has a loop of its
        own, a few milliseconds long: six supervisors started and ticked in each took 0.4-0.6
        ms a test, as much as the rest of a pooled lease, and ended before they measured
        anything. What a short loop needs (creations for its waiters, stall checks, resets)
        runs without them."""
        await self.clock.sleep(GUEST_SUPERVISE_AFTER_S)
        if self.supervise and self._state not in (_State.CLOSING, _State.CLOSED):
            start_all(self, runtime)

    def make_room(self, svc: ServicePool, *, lasting: bool = False) -> bool:
        """At the pool-wide cap, destroy the least recently used idle instance of another
        service so that ``svc`` can create one. True if room was made."""
        if self.budget.has_room(svc.core, lasting=lasting):
            return False
        # A service's last instance goes only for another's first: evicting it would keep its
        # slot for it again (``kept_for_others``) and free nothing for ``svc``. A service whose
        # instances are all lent to groups has none for its own tests: its next is a first (a
        # test that holds a group and then leases its member waited for its timeout).
        first = len(svc.core.entries) - svc.core.lent + svc.core.creating <= 0
        victim = None
        for other in self.service_pools.values():
            oc = other.core
            if other is svc or not oc.idle or len(oc.entries) <= max(oc.min_size, 0 if first else 1):
                continue
            candidate = other.core.idle[0]
            if victim is None or candidate.last_used < victim[1].last_used:
                victim = (other, candidate)
        if victim is None:
            return False
        other, entry = victim
        other.core.take_idle_for_removal(entry)
        other.destroy_soon(entry)
        return True

    # == lifecycle ============================================================================

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED or self._state is _State.CLOSING

    @property
    def started(self) -> bool:
        return self._state is _State.OPEN

    def _check_open(self, action: str) -> None:
        if self.closed:
            raise PoolClosedError(f"pool {self.name!r} is {self._state.value}; cannot {action}")

    async def start(self) -> None:
        """Start the runtime of the current loop (supervisors) and warm the pool: ``min_size``
        of each service, or the size history says it settled at, whichever is larger.

        A start that is cancelled or fails undoes itself: the pool is closed, what the warm-up
        made is destroyed, and the cancellation (or error) propagates.
        """
        self._check_open("start it again")
        if self._managed_by is not None:
            raise MockPoolError(
                f"pool {self.name!r} is started and closed by {self._managed_by}; leaving "
                "'async with pool:' would close it for every later test. Acquire from it "
                "directly: 'async with pool.acquire(...)'"
            )
        if self._state is _State.OPEN:
            raise MockPoolError(
                f"pool {self.name!r} is started already; enter 'async with pool:' once, around "
                "all its use: an inner block would close it as it ends"
            )
        started = self.clock.now()
        self._home = weakref.ref(running_loop(self.name, "start", "pool"))
        runtime = self._runtime()
        self._state = _State.OPEN
        try:
            await runtime.wait_ready()
            await self.warm(self.warm_targets())
        except BaseException:
            # Shielded: the undo must finish before the cancellation propagates (each step of
            # closing is bounded by its own timeout).
            with anyio.CancelScope(shield=True):
                await self._close_shielded()
            raise
        # From the start: the scaling supervisor's min_size floor may have done the creating
        # while the runtime started, and that is warm-up too.
        self.warmup_s = self.clock.now() - started

    def warm_targets(self) -> dict[str, int]:
        """Instances to pre-create per service: ``max(min_size, the size history says it
        settled at)``, capped by ``max_size``; group members at least what their groups hold
        (see ``warming``)."""
        return warming.warm_targets(self)

    def elapsed(self) -> float:
        """Seconds since the pool was made, on the pool's clock (the run's time axis)."""
        return self.clock.now() - self._started_at

    def sample_usage(self) -> None:
        """Fold the counters since the last sample into this run's record (the usage
        sampler calls this once per window; so do ``run_record`` and ``aclose``)."""
        t_rel = self.elapsed()
        # Count the window's acquisitions at its middle, so a sample taken just after a
        # window boundary does not shift them into the next window.
        at = (self._sampled_at + t_rel) / 2
        for name, svc in self.service_pools.items():
            count, peak = svc.sample_usage(t_rel)
            self.recorder.record_window(name, at, count, peak)
            hold = svc.metrics.hold_ewma
            if count and hold > 0:
                self.recorder.record_release(name, hold)
        self._sampled_at = t_rel

    def run_record(self) -> RunRecord:
        """What this run learned so far: demand per window, peaks, holds, tests' services."""
        self.sample_usage()
        for test_id, services in self.test_services.items():
            self.recorder.record_test(test_id, services)
        return self.recorder.finish(
            duration_s=self.elapsed(),
            sizes={name: svc.settled_at() for name, svc in self.service_pools.items()},
        )

    def save_history(self) -> None:
        """Merge this run into the history and write it (when made with a ``history`` path)."""
        if self.history_path is None:
            return
        # Into the file as it is now: another pool on the same file (one of this process, or a
        # run beside this one) may have saved its run since this one read it, and merged into
        # what this pool read then, that run was lost.
        latest = History.read_quietly(self.history_path)
        base = latest if latest is not None else self.history
        try:
            base.merge(self.run_record()).save(self.history_path)
        except (OSError, ValueError) as exc:
            warnings.warn(
                f"pool {self.name!r}: could not save history to {str(self.history_path)!r}: {exc}",
                MockPoolHistoryWarning,
                stacklevel=2,
            )

    async def warm(
        self, targets: Mapping[str, int] | None = None, *, limit: int = warming.WARM_LIMIT
    ) -> float:
        """Create instances until each service has its target (default ``min_size``; group
        members at least what their groups hold), at most ``limit`` at once, and wait for
        them. Returns the time it took in seconds (also ``warmup_s``)."""
        return await warming.warm(self, targets, limit=limit)

    async def aclose(self) -> None:
        """Close: fail waiters, wait (up to ``close_timeout``) for leases, destroy everything,
        end the supervisors. Idempotent.

        The work runs in a task of its own: if the caller is cancelled (a timeout around
        ``aclose``), closing goes on in the background and the cancellation propagates. If
        the loop ends, or stops running, before it finished, the next ``aclose`` (in any
        loop) finishes it.
        """
        if self._state is _State.CLOSED:
            return
        await self._close_shielded()

    async def _close_shielded(self) -> None:
        loop = running_loop(self.name, "aclose", "pool")
        task = self._close_task
        while (
            task is not None
            and not task.done()
            and task.get_loop() is not loop
            and task.get_loop().is_running()
        ):
            # Closing is under way in a loop of another thread: wait for it there. That loop
            # may end first, cancelling it: then it is finished here.
            try:
                ended = _done_in(task, loop)
            except RuntimeError:
                break  # that loop closed since it was looked at: finished here
            await asyncio.shield(ended)
            task = self._close_task
        if self._finished_closing():
            return  # in another thread's loop
        if task is None or (task.done() and self._state is not _State.CLOSED) or task.get_loop() is not loop:
            task = self._close_task = loop.create_task(self._close(), name=f"mockpool[{self.name}] close")
        # shield(): a cancelled caller stops waiting, the close goes on.
        await asyncio.shield(task)

    def _finished_closing(self) -> bool:
        # A method, not an inline test: another thread's close may have changed the state
        # across the awaits above, which a type checker's narrowing cannot see.
        return self._state is _State.CLOSED

    async def _close(self) -> None:
        self._state = _State.CLOSING
        self._close_round += 1
        this_round = self._close_round
        for svc in self.service_pools.values():
            svc.core.closed = True
            svc.core.fail_waiters(
                PoolClosedError(f"pool {self.name!r} closed while waiting for {svc.name!r}")
            )
            if svc.core.leased:
                # Instances handed to waiters of loops closed since: no lease will end them.
                svc.core.settle_transit()
        if self._leases_out() and self.close_timeout > 0:
            ended = asyncio.Event()
            self._lease_ended = (ended, asyncio.get_running_loop())
            with anyio.move_on_after(self.close_timeout):
                while self._leases_out():
                    await ended.wait()
                    ended.clear()
        if not self._history_saved:
            self._history_saved = True
            self.save_history()
        await self._destroy_all(this_round)
        if self._close_round != this_round:
            # A newer close, in another loop, took over while this one's loop was paused
            # (open, not running): the rest is that close's.
            return
        self.holds.clear()  # leases never ended (leaks) would keep their tasks alive
        current = asyncio.get_running_loop()
        for loop, runtime in list(self._runtimes.items()):
            if loop is current:
                runtime.cancel()
                await runtime.finished.wait()
            elif not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(runtime.cancel)
                except RuntimeError:
                    pass  # that loop closed since it was looked at: its runtime ended with it
        self._state = _State.CLOSED

    def note_use(self, owner: str | None, service: str) -> None:
        """Record that ``owner`` (a test id) used ``service`` (called when tracking leases).
        A lease no test owns (a module or session fixture's, a thread's) counts as used outside
        tests (``OUTSIDE_TESTS``): history names the service, so the next run warms it."""
        self.test_services.setdefault(OUTSIDE_TESTS if owner is None else owner, set()).add(service)

    def note_test(self, test_id: str) -> None:
        """Record that the test ``test_id`` ran, even if it leases nothing: history then knows
        that it uses no service, and a run of it alone warms nothing for it."""
        self.test_services.setdefault(test_id, set())

    def note_isolation_failure(self, owner: str | None, error: IsolationError) -> None:
        """Record that the lease of ``owner`` (a test id, when tracking leases) left state that
        its reset did not clean; the pytest plugin fails that test (:meth:`take_isolation_failures`)."""
        if owner is not None and self.track_leases:
            self._isolation_failures.setdefault(owner, []).append(error)

    def take_isolation_failures(self, owner: str) -> list[IsolationError]:
        """The isolation failures the leases of ``owner`` left, forgetting them."""
        return self._isolation_failures.pop(owner, [])

    def expect(self, services: Iterable[str], *, count: int = 1) -> int:
        """Hint that ``services`` (and their members) will be acquired soon, in that order: make
        sure each has ``count`` instances, alive (idle or in use) or on their way, creating in
        background; more than that is the sizing controller's call, from measurements. An item
        that is not a service name is a test id, standing for the services history says that
        test used. Unknown names are ignored (history may name services this run did not
        register). Returns how many creations were started. Needs a running loop; without one
        it does nothing."""
        if self.closed or asyncio._get_running_loop() is None:
            return 0
        return warming.expect(self, services, count=count)

    def close(self) -> None:
        """Close from synchronous code (no running loop), e.g. a session fixture's teardown."""
        if asyncio._get_running_loop() is not None:
            raise MockPoolError(
                f"pool {self.name!r}: close() was called inside a running event loop; "
                "use 'await pool.aclose()' there"
            )
        if not self.closed:
            asyncio.run(self.aclose())

    def active_leases(self) -> list[Lease[Any]]:
        """Leases held right now (only when the pool tracks leases: ``track_leases=True``)."""
        return [lease for svc in self.service_pools.values() for lease in (svc.active or ())]

    def reclaim(self, lease: Lease[Any], *, leak: bool = True) -> None:
        """Take back the instance of a lease still held when its test ended and send it to
        recovery, since its state is unknown. It is counted as a leak unless ``leak=False``
        (a lease the test was allowed to keep). Works without a running loop; recovery then
        starts in the next loop that uses the pool."""
        entry = lease._entry
        if entry is None or lease._released:
            return
        lease._released = True
        svc = lease._svc
        if leak:
            svc.metrics.leaks += 1
        if svc.active is not None:
            svc.active.discard(lease)
        if entry.state.value != "leased":
            return
        if asyncio._get_running_loop() is not None:
            svc.to_recovery(entry, "leaked: still held when its test ended")
        else:
            svc.core.begin_recovery(entry)
            svc.orphans.append(entry)

    def _leases_out(self) -> bool:
        """Whether any instance is held by a lease. Members lent to groups do not count: to
        group instances, or to a group's creation under way (counted lent too; counted as
        leases, a creation frozen in a paused loop kept the close waiting ``close_timeout``)."""
        return any(svc.core.in_use > svc.core.lent for svc in self.service_pools.values())

    def lease_ended(self) -> None:
        """Called while the pool is closing by what ends a lease: its release, or the
        background reset the release left running. From any thread: an ``asyncio.Event`` set
        from another thread than its loop's does not wake that loop (a lease the app's thread
        held under TestClient kept the close waiting its whole ``close_timeout``)."""
        waiting = self._lease_ended
        if waiting is None:
            return
        ended, loop = waiting
        if asyncio._get_running_loop() is loop:
            ended.set()
            return
        try:
            loop.call_soon_threadsafe(ended.set)
        except RuntimeError:
            pass  # that loop is closed: the close waiting there was cut short with it

    async def _destroy_all(self, this_round: int) -> None:
        pools = [*self._retired, *self.service_pools.values()]
        # Members held by a group are destroyed with their own service, awaited here like every
        # other instance (releasing them would spawn their destroy into a runtime that is about
        # to end), and they are no leak.
        held_by_groups = {
            id(member)
            for svc in pools
            for entry in svc.core.entries
            for member in (entry.members or {}).values()
        }
        # Off the books first (a late release must not place them), then destroyed; a close cut
        # short by the end of its loop leaves the rest in _undestroyed for the next aclose.
        for svc in reversed(pools):
            core = svc.core
            held = leased = 0
            for entry in list(core.entries):
                was_leased = entry.state.value in ("leased", "resetting")
                core.remove(entry)
                if id(entry) in held_by_groups:
                    held += 1
                elif was_leased:
                    leased += 1
                entry.members = None
                if not entry.spent:  # destroyed already, for a rebuild under way
                    self._undestroyed.append((svc, entry.instance))
            # The rest of those lent are held by groups' creations under way: no leak either;
            # each creation gives its own back (``lend(-1)``) as it ends.
            building = max(0, core.lent - held)
            svc.metrics.leaks += max(0, leased - building)
            core.lent = building
        while self._undestroyed:
            svc, instance = self._undestroyed[0]
            # Destroyed again after a close cut short in its destroy (hooks are idempotent),
            # it is counted once.
            again, self._destroy_begun = self._destroy_begun, True
            await svc._destroy_instance(instance, counted=again)  # counts it destroyed
            if self._close_round != this_round:
                return  # taken over meanwhile (see _close): the list is the newer close's
            self._undestroyed.pop(0)
            self._destroy_begun = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # == introspection ========================================================================

    @overload
    def stats(self, name: str) -> PoolStats: ...
    @overload
    def stats(self, name: None = None) -> dict[str, PoolStats]: ...

    def stats(self, name: str | None = None) -> PoolStats | dict[str, PoolStats]:
        """``PoolStats`` of one service, or of every service by name."""
        if name is not None:
            return self._service(name).stats()
        return {n: s.stats() for n, s in self.service_pools.items()}

    def report(self) -> Report:
        """Everything the pool knows: per-service stats, events, supervisor errors."""
        return Report(
            pool=self.name,
            services=self.stats(),
            events=tuple(self.events),
            supervisor_errors=dict(self.supervisor_errors),
            warmup_s=self.warmup_s,
            extra={
                "learning": warming.learning_report(self),
                "isolation": {
                    n: s.last_isolation_failure
                    for n, s in self.service_pools.items()
                    if s.last_isolation_failure is not None
                },
            },
        )

    def record_event(self, service: str, trigger: str, response: str) -> Event:
        """Record an adaptation (or other notable decision) for the report."""
        event = Event(
            at_s=self.clock.now() - self._started_at, service=service, trigger=trigger, response=response
        )
        self.events.append(event)
        logger.info("pool %r: %s: %s -> %s", self.name, service, trigger, response)
        return event

    def check_invariants(self) -> None:
        """Raise ``MockPoolError`` naming the first broken invariant of any service."""
        total = 0
        for svc in self.service_pools.values():
            svc.core.check_invariants()
            total += svc.core.size + svc.core.creating
        lent = dict.fromkeys(self.service_pools, 0)
        for svc in self.service_pools.values():
            for entry in svc.core.entries:
                for member_name, member in (entry.members or {}).items():
                    lent[member_name] += 1
                    if member.state.value != "leased":
                        raise MockPoolError(
                            f"service {svc.name!r}: invariant broken: member {member_name!r} of "
                            f"entry #{entry.id} is {member.state.value}, not leased to its group"
                        )
        for svc in self.service_pools.values():
            # Groups being built hold members they are not entries yet to show.
            if not self.closed and lent[svc.name] > svc.core.lent:
                raise MockPoolError(
                    f"service {svc.name!r}: invariant broken: {svc.core.lent} instances counted "
                    f"lent to groups, {lent[svc.name]} held by group instances"
                )
        if self.budget.max_total is not None and total > self.budget.max_total:
            raise MockPoolError(f"pool {self.name!r}: invariant broken: {total} instances > max_total")
        if total != self.budget.total and not self.closed:
            raise MockPoolError(
                f"pool {self.name!r}: invariant broken: budget counts {self.budget.total}, "
                f"services hold {total}"
            )

    def __repr__(self) -> str:
        parts = " | ".join(
            f"{n}: {s.core.in_use} in use, {len(s.core.idle)} idle, {s.core.waiting} waiting"
            for n, s in self.service_pools.items()
        )
        return f"<MockPool {self.name!r} {self._state.value} [{parts}]>"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _done_in(task: asyncio.Task[None], loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """A future of ``loop`` that completes when ``task`` (of another, running loop) is done."""
    fut: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not fut.done():
            fut.set_result(None)

    def on_done(_: asyncio.Task[None]) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(settle)

    task.get_loop().call_soon_threadsafe(task.add_done_callback, on_done)
    return fut
