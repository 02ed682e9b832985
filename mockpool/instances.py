"""Running a service's hooks on its instances: creating (factory, then for degraded services
the minimal factory or an emergency stub; snapshot and fingerprint), resetting in the
background (a group's members, isolation-verify's fingerprint check) and destroying.

An :class:`InstanceHooks` mixin of :class:`~mockpool.service.ServicePool`. Each hook is the
user's code, sync or async; an async one is bounded by its ``*_timeout``
(:func:`~mockpool.hooks.call_hook`). What a release starts (an async reset, a group's, one
under isolation-verify; an async destroy) runs in a background task of the pool's runtime,
never in the test's task. The hooks that run inline on the acquire and release paths stay
there: ``bind``, a sync ``reset`` and the health check on acquire (:mod:`mockpool.service`),
``on_acquire`` and ``on_release`` (:mod:`mockpool.lease`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .core import Entry, EntryState
from .errors import MockPoolError, RecoveryFailedError
from .hooks import awaited, call_hook, deadline, must_propagate
from .isolation import IsolationError, difference, fingerprint_hook
from .paused import LoopWork
from .stubs import make_stub

if TYPE_CHECKING:
    from .clock import Clock
    from .core import ServiceCore
    from .metrics import LoopBlocks, ServiceMetrics
    from .spec import Hook, ServiceSpec

__all__ = ("CpuMeter", "InstanceHooks", "declared_type")

logger = logging.getLogger("mockpool")

# mockpool runs on asyncio, whose cancellation (also under anyio) is CancelledError.
_CANCELLED = (asyncio.CancelledError,)


class CpuMeter(Protocol):
    """The runtime of a loop, as far as creations count the CPU a sync factory took and the
    time it held the loop."""

    creation_cpu: float
    creation_blocked: float


class _Port(Protocol):
    """What running the hooks needs of the pool (:class:`~mockpool.service.PoolPort` has it)."""

    @property
    def service_pools(self) -> Mapping[str, InstanceHooks]: ...
    def spawn(
        self, fn: Callable[..., Any], *args: Any, on_drop: Callable[[], None] | None = None
    ) -> None: ...
    def current_runtime(self) -> CpuMeter | None: ...
    def lease_ended(self) -> None: ...


class _Superseded(Exception):
    """A reserved creation that a lowered ``max_size`` left past the bound: it makes nothing."""


class _Ticket:
    """A reserved creation, spawned in one loop's runtime, that a waiter in another loop may
    run instead: whichever claimer runs first creates (see :meth:`InstanceHooks.spawn_creation`)."""

    __slots__ = ("loop", "members", "offered", "owner", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The claimer that claimed it (its token), None while unclaimed.
        self.owner: object | None = None
        #: Claimers spawned that have neither run nor been dropped.
        self.pending = 0
        #: The other loops a claimer was spawned in (one each).
        self.offered: set[asyncio.AbstractEventLoop] = set()
        #: A group's creation under way: the members it leased so far (the dict it builds on),
        #: for the drop to give back if its loop closes with the creation frozen mid-way.
        self.members: dict[str, Entry] | None = None


class InstanceHooks:
    """Creating, resetting and destroying instances (a mixin of
    :class:`~mockpool.service.ServicePool`)."""

    def __init__(self) -> None:
        super().__init__()  # the next mixin's state (cooperative: ServicePool lists several)
        #: Creations spawned and not yet claimed, and how many of them each loop spawned.
        self._tickets: list[_Ticket] = []
        self._ticket_loops: dict[asyncio.AbstractEventLoop, int] = {}
        #: Creations under way, by the loop that runs them (see :mod:`mockpool.paused`).
        self.creations_in = LoopWork()

    if TYPE_CHECKING:
        # What this part reads of the service pool, which defines it.
        name: str
        spec: ServiceSpec
        clock: Clock
        core: ServiceCore
        metrics: ServiceMetrics
        blocks: LoopBlocks
        factory: Hook
        variant: str | None
        reset: Hook | None
        bind: Hook | None
        verify_isolation: bool
        members: tuple[InstanceHooks, ...]
        member_paths: tuple[tuple[tuple[str, ...], InstanceHooks], ...]
        orphans: list[Entry]
        last_error: BaseException | None
        last_reset_error: BaseException | None
        last_isolation_failure: str | None
        creation_failures: int
        last_created_at: float | None
        peak_size: int

        @property
        def pool(self) -> _Port: ...
        def bind_entry(self, entry: Entry) -> Entry: ...
        async def wait_for_entry_internal(self) -> Entry: ...
        def release_entry(
            self, entry: Entry, *, discard: bool = False
        ) -> asyncio.Future[IsolationError | None] | None: ...
        def to_recovery(self, entry: Entry, reason: str) -> None: ...
        def fail_waiters_since(self, error: BaseException, started: float | None) -> None: ...
        def watch_lent(self) -> None: ...
        def watch_shortfall(self) -> None: ...
        def ensure_creations(self, *, stalled: bool = False, evict: bool = False) -> None: ...
        def _wake_settled(self) -> None: ...

    # == creating =============================================================================

    def spawn_creation(self) -> None:
        """Run a creation reserved with ``core.reserve_creation()`` in the running loop's
        runtime, as a ticket that a waiter in another loop can take over
        (:meth:`take_over_creations`)."""
        ticket = _Ticket(asyncio.get_running_loop())
        with self.core.budget.lock:
            self._tickets.append(ticket)
            self._ticket_loops[ticket.loop] = self._ticket_loops.get(ticket.loop, 0) + 1
        self._spawn_claimer(ticket)

    def take_over_creations(self, loop: asyncio.AbstractEventLoop) -> None:
        """A waiter queued in ``loop`` counts on creations spawned in other loops, which may
        never run: a test that calls Starlette's TestClient synchronously blocks its own loop,
        and the app's acquire in TestClient's thread waited 30 s for the creation a marker had
        started there. Spawn a claimer here for one of them (one per waiter: taking over all
        sixteen a warm-up started made the one waiter run sixteen factories first); whichever
        claimer runs first creates, the other does nothing. O(1) while every creation is the
        waiter's own loop's."""
        loops = self._ticket_loops
        if not loops or (len(loops) == 1 and loop in loops):
            return
        with self.core.budget.lock:
            ticket = next((t for t in self._tickets if t.loop is not loop and loop not in t.offered), None)
            if ticket is None:
                return
            ticket.offered.add(loop)
        self._spawn_claimer(ticket)

    def _spawn_claimer(self, ticket: _Ticket) -> None:
        token = object()
        with self.core.budget.lock:
            ticket.pending += 1
        self.pool.spawn(self._run_ticket, ticket, token, on_drop=lambda: self._drop_claimer(ticket, token))

    def _claim(self, ticket: _Ticket, token: object) -> bool:
        """Under the lock: ``token`` takes ``ticket`` if nobody has."""
        if ticket.owner is not None:
            return False
        ticket.owner = token
        self._tickets.remove(ticket)
        left = self._ticket_loops[ticket.loop] - 1
        if left:
            self._ticket_loops[ticket.loop] = left
        else:
            del self._ticket_loops[ticket.loop]
        return True

    async def _run_ticket(self, ticket: _Ticket, token: object) -> None:
        with self.core.budget.lock:
            ticket.pending -= 1
            claimed = self._claim(ticket, token)
        if claimed:
            loop = self.creations_in.begin()
            try:
                await self._create_one(ticket)
            finally:
                self.creations_in.end(loop)

    def _drop_claimer(self, ticket: _Ticket, token: object) -> None:
        """A claimer's runtime ended before it did (its loop closed). It releases the
        reservation if it had claimed the ticket (frozen mid-creation), or if it was the last
        claimer and nobody claimed it; otherwise a claimer in another loop still will."""
        with self.core.budget.lock:
            if ticket.owner is token:
                release = True
            else:
                ticket.pending -= 1
                release = ticket.pending == 0 and self._claim(ticket, token)
        if release:
            if ticket.owner is token:
                self._release_frozen_members(ticket)
            self._creation_dropped()

    def _release_frozen_members(self, ticket: _Ticket) -> None:
        """Give back the members a group's creation frozen in a closed loop had leased: that
        coroutine never runs again, so its own cleanup never would (the member stayed leased
        for good; at its max_size, the member and the group waited for ever)."""
        members, ticket.members = ticket.members, None
        if members:
            held = dict(members)
            # The frozen coroutine's own dict: emptied, so that it gives nothing back twice
            # should it ever be finalized.
            members.clear()
            self._release_members(held)

    async def _create_one(self, ticket: _Ticket | None = None) -> None:
        try:
            await self._create(ticket)
        finally:
            if ticket is not None:
                ticket.members = None
            self._wake_settled()

    def _creation_dropped(self) -> None:
        """A spawned creation never ran (its loop closed first): release its reservation, or
        the service would count an instance on its way for ever and never create another."""
        self.core.cancel_creation()
        self._wake_settled()

    async def _create(self, ticket: _Ticket | None = None) -> None:
        core = self.core
        started = self.clock.now()
        try:
            entry, built_from = await self.build_entry(ticket)
        except _Superseded:
            core.cancel_creation()
            if core.waiters:
                self.ensure_creations()  # a waiter nothing else serves still gets its creation
            return
        except BaseException as exc:
            core.cancel_creation()
            if isinstance(exc, _CANCELLED):
                raise
            self._after_failed_creation(exc, started)
            if must_propagate(exc):
                raise  # Ctrl-C or an exit in the factory: the run stops, as asyncio lets it
            return
        now = self.clock.now()
        # A group's creation is timed from its members' arrival: the wait for them is their
        # own creations (counted in the group's cost as theirs) or other tests' leases, not
        # this factory's work. Counted in, a group was priced at its members' twice over.
        self.metrics.record_creation(now - built_from)
        self.last_created_at = now
        self.creation_failures = 0
        waiter = core.add_created(entry)
        self.peak_size = max(self.peak_size, core.size)
        if waiter is not None:
            waiter.fresh = True
        if core.closed:
            self._retire_closed(entry)

    def _after_failed_creation(self, exc: BaseException, started: float | None = None) -> None:
        core = self.core
        self.last_error = exc
        self.creation_failures += 1
        if core.waiters and core.size + core.creating == 0:
            # Nothing alive and nothing on its way: no waiter can be served; fail them now,
            # with the cause, rather than let each wait for its timeout.
            error = RecoveryFailedError(self.name, self._ladder_names(), exc)
            error.__cause__ = exc
            self.fail_waiters_since(error, started)
        elif core.waiters:
            # Something is alive (held, or lent to groups) but this creation was the waiters':
            # try again after a stall, backed off for the failures. Started while it was on its
            # way, the waiters had no stall check armed: with only lent instances, nothing else
            # would ever serve them (without supervisors, for good).
            self.watch_shortfall()

    async def build_entry(self, ticket: _Ticket | None = None) -> tuple[Entry, float]:
        """Make a new entry: factory first, then (degraded services only) minimal, then stub.
        Returns it, and when its build began (for a group: once its members were leased; the
        ``ticket`` of the creation, if any, holds them meanwhile)."""
        members = await self._lease_members(ticket) if self.members else None
        core = self.core
        if len(core.entries) + core.creating > core.max_size:
            # ``resize`` lowered max_size while this creation waited (for its members, or to
            # run): made now, its instance would be one past the bound, destroyed as it joined.
            self._release_members(members)
            raise _Superseded(self.name)
        built_from = self.clock.now()
        try:
            args = [m.handle for m in members.values()] if members else []
            entry = await self._build(self.factory, args, tier=None)
        except BaseException as first:
            if must_propagate(first) or not self.spec.allow_degraded:
                self._release_members(members)
                raise
            self.metrics.create_failures += 1
            entry = await self._build_degraded(args, first, members)
        entry.members = members
        if members and any(m.degraded for m in members.values()):
            entry.degraded = True  # built on a degraded member: a lesser double too
        entry.variant = self.variant
        return entry, built_from

    async def _build_degraded(
        self, args: list[Any], cause: BaseException, members: dict[str, Entry] | None
    ) -> Entry:
        last = cause
        if self.spec.minimal is not None:
            try:
                entry = await self._build(self.spec.minimal, args, tier="minimal")
            except BaseException as exc:
                if must_propagate(exc):
                    self._release_members(members)
                    raise
                last = exc
            else:
                self.metrics.recoveries["minimal"] += 1
                return entry
        template = self._stub_template()
        if template is None:
            self._release_members(members)
            raise last
        entry = make_stub(template, self.clock.now())
        self.metrics.created += 1
        self.metrics.recoveries["stub"] += 1
        return entry

    def _ladder_names(self) -> list[str]:
        names = ["factory"]
        if self.spec.allow_degraded:
            if self.spec.minimal is not None:
                names.append("minimal")
            names.append("stub")
        return names

    def _stub_template(self) -> type | None:
        """The class an emergency stub imitates: what tests receive from a working instance
        (with a ``bind`` hook, the bound handle's class, learned when one was bound), else the
        class the factory declares (a class, or a function's return annotation), so that a
        service whose factory never worked can still be stubbed."""
        if self.bind is not None:
            return self._handle_type
        for entry in self.core.entries:
            if not entry.degraded:
                return type(entry.instance)
        return self._known_type or declared_type(self.spec.factory)

    _known_type: type | None = None
    _handle_type: type | None = None

    async def _build(self, factory: Callable[..., Any], args: list[Any], *, tier: str | None) -> Entry:
        spec = self.spec
        cpu = time.thread_time()
        began = self.clock.now()
        instance = await call_hook(
            factory, *args, timeout=spec.create_timeout, service=self.name, name=tier or "factory"
        )
        if not inspect.iscoroutinefunction(factory):
            # A sync factory ran on the loop's thread without a pause: its CPU is the loop's,
            # not the leases' (the sizing controller tells the two apart), and the leases held
            # meanwhile did nothing.
            ended = self.clock.now()
            self.blocks.add(began, ended)
            runtime = self.pool.current_runtime()
            if runtime is not None:
                runtime.creation_cpu += time.thread_time() - cpu
                runtime.creation_blocked += ended - began
        if instance is None:
            hook = "minimal factory" if tier == "minimal" else "factory"
            raise MockPoolError(
                f"service {self.name!r}: the {hook} {_hook_name(factory)} returned None; it must "
                "return the instance tests receive (a factory that sets something up still "
                "returns the double)"
            )
        # Counted made now, so that destroying it below (a failed snapshot) keeps
        # ``created - destroyed`` equal to the live instances.
        self.metrics.created += 1
        try:
            pristine = None
            if spec.snapshot is not None:
                pristine = await call_hook(
                    spec.snapshot, instance, timeout=spec.reset_timeout, service=self.name, name="snapshot"
                )
            fingerprint = None
            if self.verify_isolation:
                fingerprint = (
                    pristine
                    if spec.fingerprint is None
                    else await call_hook(
                        spec.fingerprint,
                        instance,
                        timeout=spec.reset_timeout,
                        service=self.name,
                        name="fingerprint",
                    )
                )
        except BaseException:
            await self._destroy_instance(instance)
            raise
        entry = Entry(instance, now=self.clock.now(), pristine=pristine)
        entry.fingerprint = fingerprint
        if tier is not None:
            entry.tier = tier
            entry.degraded = True
        elif self._known_type is None:
            self._known_type = type(instance)
        return entry

    async def _lease_members(self, ticket: _Ticket | None = None) -> dict[str, Entry]:
        members: dict[str, Entry] = {}
        if ticket is not None:
            ticket.members = members
        try:
            for member in self.members:
                entry = member.core.take_idle()
                if entry is None:
                    entry = await member.wait_for_entry_internal()
                members[member.name] = member.bind_entry(entry)
                member.core.lend(1)
                if member.core.waiters:
                    member.watch_lent()
        except BaseException:
            self._release_members(members)
            raise
        return members

    def _release_members(self, members: dict[str, Entry] | None) -> None:
        if not members:
            return
        services = self.pool.service_pools
        for name, entry in members.items():
            member = services.get(name)
            if member is None:
                continue
            # The group's bind may have moved its client to another loop: a direct lease binds
            # it again.
            entry.handle_loop = None
            member.core.lend(-1)
            if entry.state is EntryState.LEASED:
                if entry.spent:
                    # Its instance was destroyed for a rebuild that failed (the group's
                    # recovery): no reset can make it usable; its own ladder may.
                    member.to_recovery(entry, "its rebuild in its group's recovery failed")
                else:
                    member.release_entry(entry)

    # == resetting in the background ==========================================================

    async def _reset_in_background(
        self,
        entry: Entry,
        pending: Any,
        done: asyncio.Future[IsolationError | None],
        rest: tuple[tuple[InstanceHooks, Any], ...] = (),
    ) -> None:
        """Finish a reset begun at release: await ``pending`` (the first reset hook that
        returned an awaitable), then run the resets in ``rest``; or, with nothing pending,
        the whole reset (isolation-verify mode).

        A close that gave up waiting for it (``close_timeout``) took the entry off the books
        and destroyed its instance meanwhile: however the reset then ends (cancelled with the
        runtime, failing on the closed instance, done), nothing is left to place or recover."""
        try:
            try:
                with deadline(self.name, "reset", self.spec.reset_timeout):
                    if pending is not None:
                        await awaited(pending, self.name, "reset")
                        for svc, instance in rest:
                            await svc.reset_instance(instance)
                    else:
                        await self.full_reset(entry)
            except _CANCELLED:
                # The loop is going away mid-reset: the instance is in an unknown state. Park it
                # for recovery by the next runtime; the cancellation propagates.
                if entry.state is EntryState.RESETTING:
                    self.core.begin_recovery(entry)
                    self.orphans.append(entry)
                raise
            except Exception as exc:
                if entry.state is EntryState.RESETTING:
                    self._reset_failed(entry, exc)
                if isinstance(exc, IsolationError) and not done.done():
                    done.set_result(exc)
                return
            except BaseException as exc:
                # ``pytest.fail`` in the hook, KeyboardInterrupt: the instance goes to recovery,
                # and the exception to the releasing task (the test), not into the runtime's
                # task group, which it would end, with all the pool's background work.
                if entry.state is EntryState.RESETTING:
                    self._reset_failed(entry, exc)
                if not done.done():
                    done.set_exception(exc)
                return
            if entry.state is EntryState.RESETTING:
                self.core.finish_reset(entry)
                self.metrics.resets += 1
        finally:
            if not done.done():
                done.set_result(None)
            if self.core.closed:
                # The lease ended only now (its task stopped awaiting the reset): a close may
                # be waiting for it.
                self.pool.lease_ended()

    def _reset_dropped(self, entry: Entry, pending: Any, done: asyncio.Future[IsolationError | None]) -> None:
        """The background reset never ran (its loop closed first): as for one interrupted
        mid-way, park the entry for recovery by the next runtime."""
        if inspect.iscoroutine(pending) and inspect.getcoroutinestate(pending) == inspect.CORO_CREATED:
            pending.close()  # the reset hook's coroutine will not run: no "never awaited"
        if entry.state is EntryState.RESETTING:
            self.core.begin_recovery(entry)
            self.orphans.append(entry)
        if not done.done() and not done.get_loop().is_closed():
            done.set_result(None)

    async def reset_instance(self, instance: Any) -> None:
        """Run this service's reset hook on ``instance``, bounded by ``reset_timeout``."""
        if self.reset is not None:
            await call_hook(
                self.reset, instance, timeout=self.spec.reset_timeout, service=self.name, name="reset"
            )

    async def full_reset(self, entry: Entry) -> None:
        """Reset an entry (a group's members at every depth first, innermost first), then
        verify isolation if asked to."""
        member_paths = self.member_paths
        for path, svc in member_paths:
            await svc.reset_instance(entry.member_at(path).instance)
        await self.reset_instance(entry.instance)
        if self.verify_isolation:
            # The group's own state, then each member's at every depth: a test reaches them all.
            for path, svc in (((), self), *member_paths):
                detail = await svc.isolation_difference(entry.member_at(path))
                if detail is not None:
                    if path:
                        detail = f"{_member_name(path)}: {detail}"
                    self.metrics.isolation_failures += 1
                    self.last_isolation_failure = detail
                    raise IsolationError(self.name, detail)

    async def isolation_difference(self, entry: Entry) -> str | None:
        """Under ``isolation_verify``, what differs between ``entry``'s fingerprint now and
        the one taken at its creation, in a line; None when nothing does (or nothing is
        verified: no fingerprint hook, or verification off)."""
        hook = fingerprint_hook(self.spec)
        if not self.verify_isolation or hook is None or entry.fingerprint is None:
            return None
        now = await call_hook(
            hook, entry.instance, timeout=self.spec.reset_timeout, service=self.name, name="fingerprint"
        )
        return None if now == entry.fingerprint else difference(entry.fingerprint, now)

    def _reset_failed(self, entry: Entry, exc: BaseException) -> None:
        self.metrics.reset_failures += 1
        self.last_error = self.last_reset_error = exc
        logger.warning("service %r: reset failed (%s: %s); recovering", self.name, type(exc).__name__, exc)
        self.to_recovery(entry, f"reset failed: {exc!r}")

    # == destroying ===========================================================================

    def _retire_closed(self, entry: Entry, *, already_removed: bool = False) -> None:
        if not already_removed:
            self.core.remove(entry)
        self.destroy_soon(entry)

    def destroy_soon(self, entry: Entry) -> None:
        """Destroy a removed entry's instance: inline if the hook is sync, else in background."""
        self._release_members(entry.members)
        entry.members = None
        if entry.spent:
            return  # its instance was destroyed (and counted) before its recovery rebuilt it
        destroy = self.spec.destroy
        self.metrics.destroyed += 1
        if destroy is None:
            return
        try:
            result = destroy(entry.instance)
        except BaseException as exc:
            if must_propagate(exc):
                raise
            logger.warning("service %r: destroy failed: %r", self.name, exc)
            return
        if inspect.isawaitable(result):
            self.pool.spawn(self._await_destroy, result, on_drop=lambda: _close(result))

    async def _await_destroy(self, awaitable: Any) -> None:
        try:
            with deadline(self.name, "destroy", self.spec.destroy_timeout):
                await awaited(awaitable, self.name, "destroy")
        except BaseException as exc:
            if must_propagate(exc):
                raise
            logger.warning("service %r: destroy failed: %r", self.name, exc)

    async def _destroy_instance(self, instance: Any, *, counted: bool = False) -> None:
        """Destroy an instance no entry holds any more (replaced, never placed, or closing).
        ``counted``: a destroy of it that was cut short counted it already."""
        if not counted:
            self.metrics.destroyed += 1
        destroy = self.spec.destroy
        if destroy is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                await call_hook(
                    destroy, instance, timeout=self.spec.destroy_timeout, service=self.name, name="destroy"
                )
        except BaseException as exc:
            if must_propagate(exc):
                raise  # Ctrl-C: the close stops here; the next aclose() goes on from this one
            logger.warning("service %r: destroy failed: %r", self.name, exc)


def _close(awaitable: Any) -> None:
    """Close a coroutine that will never be awaited (no "never awaited" warning); one frozen
    mid-way in a closed loop is left alone."""
    if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED:
        awaitable.close()


def _hook_name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


def declared_type(factory: Callable[..., Any]) -> type | None:
    """The class ``factory`` makes, when it says: the class itself, or the return annotation of
    a function (``def make() -> RedisDouble``); None otherwise."""
    if isinstance(factory, type):
        return factory
    try:
        hint = typing.get_type_hints(factory).get("return")
    except Exception:  # unresolvable annotations, builtins without hints: nothing declared
        return None
    return hint if isinstance(hint, type) and hint is not type(None) else None


def _member_name(path: tuple[str, ...]) -> str:
    """A group's member as a message names it: ``member 'cache'``, or, deeper, ``member
    'cache' of 'session'`` (the group member that holds it)."""
    name = f"member {path[-1]!r}"
    return name if len(path) == 1 else f"{name} of {path[-2]!r}"
