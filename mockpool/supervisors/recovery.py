"""The recovery ladder: snapshot restore, factory, minimal factory, emergency stub.

Triggered by a failed reset, a failed health check or ``lease.discard()``. Tiers 3 and 4 give a
degraded double and run only for services with ``allow_degraded=True``. The total time from the
trigger to a working instance is recorded under the tier that produced it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from unittest import mock

from ..core import Entry, EntryState
from ..errors import MockPoolError, RecoveryFailedError
from ..hooks import call_hook

if TYPE_CHECKING:
    from ..service import ServicePool

__all__ = ("recover_entry", "swap_instance")

logger = logging.getLogger("mockpool.recovery")


class UnhealthyError(MockPoolError):
    """A restored or rebuilt instance failed its health check."""


async def recover_entry(svc: ServicePool, entry: Entry, reason: str) -> None:
    """Bring ``entry`` (state RECOVERING) back to a working instance, or remove it."""
    spec, core, clock = svc.spec, svc.core, svc.clock
    started = clock.now()
    tried: list[str] = []
    last: BaseException | None = None
    logger.info("service %r: recovering entry #%d (%s)", svc.name, entry.id, reason)

    async def healthy(instance: Any) -> None:
        if spec.health_check is not None:
            ok = await call_hook(spec.health_check, instance, timeout=spec.health_timeout)
            if ok is False:
                raise UnhealthyError(f"service {svc.name!r}: health check returned False")

    def succeed(tier: str) -> None:
        svc.metrics.recoveries[tier] += 1
        svc.metrics.recovery_times[tier].append(clock.now() - started)
        if core.closed:
            core.remove(entry)
            svc.destroy_soon(entry)
        else:
            core.finish_recovery(entry)

    if core.closed:
        core.remove(entry)
        svc.destroy_soon(entry)
        return

    # Tier 1: restore the pristine snapshot taken right after creation.
    if spec.restore is not None and entry.pristine is not None and not entry.degraded:
        tried.append("snapshot")
        try:
            await call_hook(spec.restore, entry.instance, entry.pristine, timeout=spec.reset_timeout)
            await _reset_members(svc, entry)
            await healthy(entry.instance)
        except Exception as exc:
            last = exc
        else:
            succeed("snapshot")
            return

    # Tiers 2 and 3: a new instance from the factory, then from the minimal factory.
    ladder: list[tuple[str, Any]] = [("factory", svc.factory)]
    if spec.allow_degraded and spec.minimal is not None:
        ladder.append(("minimal", spec.minimal))
    args = [m.handle for m in entry.members.values()] if entry.members else []
    old = entry.instance
    for tier, factory in ladder:
        tried.append(tier)
        try:
            await _reset_members(svc, entry)
            fresh = await svc._build(factory, args, tier=None if tier == "factory" else tier)
        except Exception as exc:
            last = exc
            continue
        try:
            await healthy(fresh.instance)
        except BaseException as exc:
            # The new instance is ours until it is swapped in: close it, never leak it.
            await svc._destroy_instance(fresh.instance)
            if not isinstance(exc, Exception):
                raise
            last = exc
            continue
        swap_instance(entry, fresh)
        # Serve first, clean up after: a slow destroy must not delay the waiting acquirers
        # nor count as recovery time.
        succeed(tier)
        await svc._destroy_instance(old)
        return

    # Tier 4: an emergency stub that keeps the instance's interface.
    if spec.allow_degraded:
        tried.append("stub")
        template = type(old) if not entry.degraded else svc._known_type
        if template is not None:
            stub = Entry(mock.create_autospec(template, instance=True), now=clock.now())
            stub.tier, stub.degraded = "stub", True
            svc.metrics.created += 1
            swap_instance(entry, stub)
            succeed("stub")
            await svc._destroy_instance(old)
            return

    # Every allowed tier failed: the instance is destroyed and counted.
    svc.metrics.recovery_failures += 1
    svc.last_error = last
    logger.warning("service %r: recovery failed after %s: %r", svc.name, ", ".join(tried), last)
    if entry.state is EntryState.RECOVERING:
        core.remove(entry)
        svc.destroy_soon(entry)
    if core.waiters and core.size + core.creating == 0:
        error = RecoveryFailedError(svc.name, tried, last)
        error.__cause__ = last
        # Waiters that came after this recovery began get a fresh attempt of their own.
        svc.fail_waiters_since(error, started)
    else:
        svc.ensure_creations()


def swap_instance(entry: Entry, fresh: Entry) -> None:
    """Move ``fresh``'s instance into ``entry`` (keeping its identity, state and members)."""
    entry.instance = fresh.instance
    entry.handle = fresh.instance
    entry.handle_loop = None
    entry.pristine = fresh.pristine
    entry.tier = fresh.tier
    entry.degraded = fresh.degraded


async def _reset_members(svc: ServicePool, entry: Entry) -> None:
    if not entry.members:
        return
    services = svc.pool.service_pools
    for name, member_entry in entry.members.items():
        member = services[name]
        if member.reset is not None:
            await call_hook(member.reset, member_entry.instance, timeout=member.spec.reset_timeout)
