"""The recovery ladder: snapshot restore, factory, minimal factory, emergency stub.

Triggered by a failed reset, a failed health check or ``lease.discard()``. Tiers 3 and 4 give a
degraded double and run only for services with ``allow_degraded=True``. The total time from the
trigger to a working instance is recorded under the tier that produced it.

A group is recovered members first, at every depth (a member that is a group: its own members
before it): each member is reset and health-checked, or else restored or rebuilt in place (its
own ladder, while it stays leased to the group), so a member's failure costs that member, not the
group. A group whose members were rebuilt is rebuilt over them (its snapshot would still point
at the old ones), a group member as the group itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .core import Entry, EntryState
from .errors import MockPoolError, RecoveryFailedError
from .hooks import call_hook, must_propagate
from .isolation import IsolationError
from .stubs import make_stub

if TYPE_CHECKING:
    from .service import ServicePool

__all__ = ("recover_entry", "swap_instance")

logger = logging.getLogger("mockpool.recovery")


class UnhealthyError(MockPoolError):
    """A restored or rebuilt instance failed its health check."""


async def _check_health(svc: ServicePool, instance: Any) -> None:
    spec = svc.spec
    if spec.health_check is not None:
        ok = await call_hook(
            spec.health_check, instance, timeout=spec.health_timeout, service=svc.name, name="health_check"
        )
        if ok is False:
            raise UnhealthyError(f"service {svc.name!r}: health check returned False")


async def _restore(svc: ServicePool, entry: Entry) -> None:
    """Tier 1: put the pristine snapshot back, then check health, then (under
    ``isolation_verify``) check that the fingerprint is the pristine one again."""
    spec = svc.spec
    assert spec.restore is not None
    await call_hook(
        spec.restore,
        entry.instance,
        entry.pristine,
        timeout=spec.reset_timeout,
        service=svc.name,
        name="restore",
    )
    await _check_health(svc, entry.instance)
    await _check_clean(svc, entry)


async def _check_clean(svc: ServicePool, entry: Entry) -> None:
    """Raise :class:`IsolationError` when verification finds ``entry`` still dirty. A
    restore that is the reset again (most built-in doubles) leaves what the reset left, and
    recovery served it to the next test; the factory's new instance is clean."""
    detail = await svc.isolation_difference(entry)
    if detail is not None:
        raise IsolationError(svc.name, f"still after restoring the snapshot: {detail}")


def _can_restore(svc: ServicePool, entry: Entry) -> bool:
    # A minimal instance has a snapshot of its own (taken when it was built); a stub has none.
    return (
        svc.spec.restore is not None
        and entry.pristine is not None
        and entry.tier != "stub"
        and not entry.spent
    )


async def _spend(svc: ServicePool, entry: Entry) -> None:
    """Destroy ``entry``'s broken instance before a new one is made for it: alive beside its
    replacement, it was one instance past ``max_size`` (and ``max_total``) as the hooks count
    them, and nothing would use it again. Marked first: a close meanwhile does not destroy
    it twice, and a recovery resumed after its loop ended does not restore or reset it."""
    if entry.spent:
        return
    entry.spent = True
    await svc._destroy_instance(entry.instance)


async def recover_entry(svc: ServicePool, entry: Entry, reason: str) -> None:
    """Bring ``entry`` (state RECOVERING) back to a working instance, or remove it."""
    spec, core, clock = svc.spec, svc.core, svc.clock
    started = clock.now()
    tried: list[str] = []
    last: BaseException | None = None
    logger.info("service %r: recovering entry #%d (%s)", svc.name, entry.id, reason)

    def succeed(tier: str) -> bool:
        """Place the recovered entry; False if the pool's close took it meanwhile (the close
        does not wait for recoveries): it destroyed the instance the entry held then."""
        if entry.state is not EntryState.RECOVERING:
            return False
        # Just restored or rebuilt, and health-checked: not an instance that sat idle.
        entry.last_used = clock.now()
        if entry.members:
            # A group is degraded when any of its members is: the test runs on a lesser double.
            entry.degraded = entry.tier is not None or any(m.degraded for m in entry.members.values())
        svc.metrics.recoveries[tier] += 1
        svc.metrics.recovery_times[tier].append(clock.now() - started)
        if core.closed:
            core.remove(entry)
            svc.destroy_soon(entry)
        else:
            core.finish_recovery(entry)
        return True

    if core.closed:
        core.remove(entry)
        svc.destroy_soon(entry)
        return

    try:
        members_rebuilt = await _recover_members(svc, entry)
    except BaseException as exc:  # pytest.fail in a hook too (see must_propagate)
        if must_propagate(exc):
            raise
        tried.append("members")
        last = exc
    else:
        # Tier 1: restore the pristine snapshot taken right after creation.
        if not members_rebuilt and _can_restore(svc, entry):
            tried.append("snapshot")
            try:
                await _restore(svc, entry)
            except BaseException as exc:  # pytest.fail in a hook too (see must_propagate)
                if must_propagate(exc):
                    raise
                last = exc
            else:
                succeed("snapshot")
                return

        # Tiers 2 and 3: a new instance from the factory, then from the minimal factory, once
        # the broken one is gone: the new one takes its place under max_size.
        await _spend(svc, entry)
        tier, fresh, error = await _build_healthy(svc, entry, tried)
        last = error or last
        if tier is not None and fresh is not None:
            swap_instance(entry, fresh)
            if not succeed(tier):  # the close took the entry meanwhile: the new one is nobody's
                await svc._destroy_instance(fresh.instance)
            return

        # Tier 4: an emergency stub that keeps the instance's interface.
        if spec.allow_degraded:
            tried.append("stub")
            template = svc._stub_template()
            if template is not None:
                stub = make_stub(template, clock.now())
                svc.metrics.created += 1
                swap_instance(entry, stub)
                if not succeed("stub"):  # as above
                    await svc._destroy_instance(stub.instance)
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
        # With nothing left held for them, the waiters look again soon (a check armed while
        # this instance was held waits a stall measured on its holds).
        svc.watch_shortfall()


def swap_instance(entry: Entry, fresh: Entry) -> None:
    """Move ``fresh``'s instance into ``entry`` (keeping its identity, state and members)."""
    entry.instance = fresh.instance
    entry.spent = False
    entry.handle = fresh.instance
    entry.handle_loop = None
    entry.pristine = fresh.pristine
    entry.fingerprint = fresh.fingerprint
    entry.tier = fresh.tier
    entry.degraded = fresh.degraded
    # A new instance: not one that sat idle (check-on-acquire would check it again at once,
    # and an instance failing its check would be replaced and checked in a loop).
    entry.last_used = fresh.last_used


def _member_handles(svc: ServicePool, entry: Entry) -> list[Any]:
    """The members' handles for the running loop, in ``depends_on`` order (a group's factory
    arguments)."""
    if not entry.members:
        return []
    services = svc.pool.service_pools
    return [services[name].bind_entry(member).handle for name, member in entry.members.items()]


async def _recover_members(svc: ServicePool, entry: Entry) -> bool:
    """Make every member of a group entry clean, at every depth; True if any direct member's
    instance was replaced (the group is then rebuilt over it).

    Innermost first, as a group's factory needs its members: a member that is a group has
    its own members recovered first. Each member is then reset and health-checked; one whose
    reset or check fails is restored from its snapshot, or else rebuilt from its own
    factories, in place (it stays leased to the group). A member whose own members were
    replaced is rebuilt over them at once (its instance, and its snapshot, still point at
    the old ones). Raises when a member cannot be made to work at all.
    """
    if not entry.members:
        return False
    services = svc.pool.service_pools
    rebuilt = False
    for name, member_entry in entry.members.items():
        member = services[name]
        if await _recover_members(member, member_entry) or member_entry.spent:
            # Rebuilt over its own new members; or its instance was destroyed already, by a
            # recovery that its event loop's end cut short.
            rebuilt |= await _recover_member(member, member_entry, restore=False)
        elif not await _member_clean(member, member_entry):
            rebuilt |= await _recover_member(member, member_entry)
        if member_entry.members:
            # A group member is degraded when any of its own members is.
            member_entry.degraded = member_entry.tier is not None or any(
                m.degraded for m in member_entry.members.values()
            )
    return rebuilt


async def _member_clean(member: ServicePool, member_entry: Entry) -> bool:
    """Reset a group's member and check it (isolation under ``isolation_verify``, then
    health); False if it needs its own ladder."""
    try:
        await member.reset_instance(member_entry.instance)
        # The group's verification may have failed on this member: reset again, it may
        # still be dirty (the reset missed it once already).
        await _check_clean(member, member_entry)
    except IsolationError as exc:
        member.last_error = exc
        return False
    except BaseException as exc:  # pytest.fail in a hook too (see must_propagate)
        if must_propagate(exc):
            raise
        member.metrics.reset_failures += 1
        member.last_error = exc
        return False
    if member.spec.health_check is None:
        return True
    # The member's check on acquire may be why the group is here: a reset need not mend what
    # a health check found, and a plain recovery's result passes its health check too.
    # Counted as the member's: a failure is what sends it to its ladder.
    member.metrics.health_checks += 1
    try:
        await _check_health(member, member_entry.instance)
    except Exception as exc:
        member.metrics.health_failures += 1
        member.last_error = exc
        return False
    return True


async def _recover_member(member: ServicePool, member_entry: Entry, *, restore: bool = True) -> bool:
    """Restore (unless ``restore`` is False) or rebuild a member that failed its reset or
    check, or whose own members were replaced; True if its instance was replaced."""
    started = member.clock.now()
    last: BaseException | None = None
    if restore and _can_restore(member, member_entry):
        try:
            await _restore(member, member_entry)
        except BaseException as exc:  # pytest.fail in a hook too (see must_propagate)
            if must_propagate(exc):
                raise
            last = exc
        else:
            member.metrics.recoveries["snapshot"] += 1
            member.metrics.recovery_times["snapshot"].append(member.clock.now() - started)
            return False
    tried = ["snapshot"] if restore else []
    # The broken instance goes first, as for a recovery of its own (see ``_spend``). Should no
    # tier work, the group gives the spent entry back to its service's recovery.
    await _spend(member, member_entry)
    tier, fresh, error = await _build_healthy(member, member_entry, tried)
    last = error or last
    if tier is not None and fresh is not None:
        swap_instance(member_entry, fresh)
        member.metrics.recoveries[tier] += 1
        member.metrics.recovery_times[tier].append(member.clock.now() - started)
        return True
    template = member._stub_template() if member.spec.allow_degraded else None
    if template is not None:
        stub = make_stub(template, member.clock.now())
        member.metrics.created += 1
        swap_instance(member_entry, stub)
        member.metrics.recoveries["stub"] += 1
        member.metrics.recovery_times["stub"].append(member.clock.now() - started)
        return True
    member.metrics.recovery_failures += 1
    if member.spec.allow_degraded:
        tried.append("stub")
    raise RecoveryFailedError(member.name, tried, last) from last


async def _build_healthy(
    svc: ServicePool, entry: Entry, tried: list[str]
) -> tuple[str | None, Entry | None, BaseException | None]:
    """Tiers 2 and 3 of the ladder: a new instance from the factory, then from the minimal
    factory (if degraded instances are allowed), that passes the health check. Returns its
    tier and the built entry, or (None, None, the last error); appends each tier tried."""
    spec = svc.spec
    ladder: list[tuple[str, Any]] = [("factory", svc.factory)]
    if spec.allow_degraded and spec.minimal is not None:
        ladder.append(("minimal", spec.minimal))
    last: BaseException | None = None
    for tier, factory in ladder:
        tried.append(tier)
        try:
            fresh = await svc._build(
                factory, _member_handles(svc, entry), tier=None if tier == "factory" else tier
            )
        except BaseException as exc:  # pytest.fail in a hook too (see must_propagate)
            if must_propagate(exc):
                raise
            last = exc
            continue
        try:
            await _check_health(svc, fresh.instance)
        except BaseException as exc:
            # The new instance is ours until it is swapped in: close it, never leak it.
            await svc._destroy_instance(fresh.instance)
            if must_propagate(exc):
                raise
            last = exc
            continue
        return tier, fresh, None
    return None, None, last
