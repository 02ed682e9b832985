"""Handing an entry over to the recovery ladder, and keeping it when its event loop ends.

A :class:`RecoveryHandoff` mixin of :class:`~mockpool.service.ServicePool`. An entry that a
failed reset, a failed check, ``lease.discard()`` or a raising ``bind``/``on_acquire`` takes out
of service goes to the ladder (:func:`mockpool.recovery.recover_entry`, which the pool hands to
each service) in a background task of the pool's runtime. When the loop of that task ends
first (before the task ran, or mid-way), the entry is parked as an *orphan*: still counted as
recovering, resumed by the next runtime to start, the health supervisor's next tick or the next
acquire that waits. (Not the *handoff* of :mod:`mockpool.metrics`: a release serving a waiter.)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, Self

from .core import Entry, EntryState
from .paused import LoopWork

if TYPE_CHECKING:
    from .core import ServiceCore

__all__ = ("RecoveryHandoff",)

# mockpool runs on asyncio, whose cancellation (also under anyio) is CancelledError.
_CANCELLED = (asyncio.CancelledError,)


class _SpawnPort(Protocol):
    """What the hand-off needs of the pool (:class:`~mockpool.service.PoolPort` has it)."""

    def spawn(
        self, fn: Callable[..., Any], *args: Any, on_drop: Callable[[], None] | None = None
    ) -> None: ...


class RecoveryHandoff:
    """Sending entries to recovery, and resuming the orphans (a mixin of
    :class:`~mockpool.service.ServicePool`)."""

    if TYPE_CHECKING:
        # What this part reads of the service pool, which defines it.
        core: ServiceCore
        #: The ladder itself (``recovery.recover_entry``), handed in by the pool.
        _recover: Callable[[Self, Entry, str], Awaitable[None]]

        @property
        def pool(self) -> _SpawnPort: ...
        def _retire_closed(self, entry: Entry, *, already_removed: bool = False) -> None: ...

    def __init__(self) -> None:
        super().__init__()  # the next mixin's state (cooperative: ServicePool lists several)
        #: Entries whose background step was interrupted by the death of its event loop;
        #: the next runtime to start resumes their recovery.
        self.orphans: list[Entry] = []
        #: Recoveries under way, by the loop that runs them (see :mod:`mockpool.paused`).
        self.recoveries_in = LoopWork()

    def to_recovery(self, entry: Entry, reason: str) -> None:
        """Send an entry (leased, resetting, checking or idle) to the recovery ladder."""
        self.core.begin_recovery(entry)
        if asyncio._get_running_loop() is None:
            # A lease ended outside any loop (its task collected after its loop closed): the
            # next runtime recovers it. Spawned, it raised, and the entry stayed recovering.
            self.orphan(entry)
            return
        self.pool.spawn(self.recover, entry, reason, on_drop=functools.partial(self.orphan, entry))

    async def recover(self: Self, entry: Entry, reason: str) -> None:
        """Tiers in order: restore the pristine snapshot, recreate from the factory, the
        ``minimal`` factory, an emergency stub (the last two only with ``allow_degraded``).
        (``self: Self``: the ladder is given the service pool itself, not this mixin.)"""
        loop = self.recoveries_in.begin()
        try:
            await self._recover(self, entry, reason)
        except _CANCELLED:
            if entry.state is EntryState.RECOVERING:
                self.orphans.append(entry)
            raise
        finally:
            self.recoveries_in.end(loop)

    def orphan(self, entry: Entry) -> None:
        """Park an entry whose recovery was cut short (its loop ended) for the next runtime.

        A method, not ``self.orphans.append``: ``resume_orphans`` replaces the list, and an
        ``on_drop`` bound to the old one would park the entry where nobody looks (the entry
        stayed "recovering" for good).
        """
        self.orphans.append(entry)

    def resume_orphans(self) -> None:
        orphans, self.orphans = self.orphans, []
        for entry in orphans:
            if entry.state is EntryState.RECOVERING:
                if self.core.closed:
                    self.core.remove(entry)
                    self._retire_closed(entry, already_removed=True)
                else:
                    self.pool.spawn(
                        self.recover,
                        entry,
                        "interrupted by the end of its event loop",
                        on_drop=functools.partial(self.orphan, entry),
                    )
