"""What the plugin keeps for one pytest session (:class:`State`, in ``config.stash``) and the
keys of what it keeps per test (in ``item.stash``). Data only: the modules that act on it
import it, so it imports none of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..history import History
    from ..lease import Lease
    from ..pool import MockPool
    from .options import Settings


@dataclass
class Leak:
    test: str
    service: str
    where: str
    phase: str

    def to_dict(self) -> dict[str, str]:
        return {"test": self.test, "service": self.service, "where": self.where, "phase": self.phase}


@dataclass
class State:
    """What the plugin keeps for one pytest session (in ``config.stash``)."""

    config: pytest.Config
    settings: Settings
    #: ``gw0``... on an xdist worker, None elsewhere.
    worker_id: str | None
    #: Processes that share the run: xdist's worker count, else 1.
    workers: int
    #: Running the xdist controller (it runs no tests).
    controller: bool
    history: History | None = None
    history_note: str | None = None
    pool: MockPool | None = None
    closed: bool = False
    #: Services that ``@pytest.mark.mockpool(...)`` declares, by test id.
    marked: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Services the collected tests are expected to use (marks and history), for warming.
    planned: set[str] = field(default_factory=set)
    #: What a collected test uses is known (its mark, or history, even as nothing): warming
    #: then keeps to ``planned``. Otherwise it warms all that history knows.
    known: bool = False
    #: Leases held by fixtures wider than a function, and allowed leaks: never a test's leak.
    scoped: set[Lease[Any]] = field(default_factory=set)
    #: Leases that tests marked ``allow_leak=True`` kept.
    allowed: set[Lease[Any]] = field(default_factory=set)
    leaks: list[Leak] = field(default_factory=list)
    #: What each process reported (one entry without xdist, one per worker with it).
    outputs: list[dict[str, Any]] = field(default_factory=list)
    warmed: dict[str, int] = field(default_factory=dict)
    warm_started: bool = False
    #: Why the pool could not be made (registration failed): told again, never retried.
    build_error: str | None = None
    #: The async runners of the collected tests that use the pool (None before collection
    #: and on the xdist controller, which collects nothing).
    runner: str | None = None
    #: The mockpool line was printed in the header (services or a hook known at start).
    announced: bool = False

    def services_for(self, item: pytest.Item | None) -> tuple[str, ...]:
        """The services ``item`` will acquire, as far as its mark and history tell."""
        if item is None:
            return ()
        marked = self.marked.get(item.nodeid, ())
        if self.history is None:
            return marked
        return marked + self.history.services_for_test(item.nodeid)


STATE = pytest.StashKey[State]()
#: Per test: it requests the ``mockpool`` fixture.
USES_POOL = pytest.StashKey[bool]()
#: Per test: its mark says ``allow_leak=True``.
ALLOW_LEAK = pytest.StashKey[bool]()
#: Per test: the leases held when its setup began (none of them can be its leak).
BEFORE = pytest.StashKey["set[Lease[Any]]"]()
#: Per test: the test that runs after it, whose services it creates ahead.
NEXT = pytest.StashKey["pytest.Item | None"]()
#: Per test: leak messages its skip or xfail would hide, reported as an error at its teardown.
HIDDEN_LEAKS = pytest.StashKey["list[str]"]()


def get_state(config: pytest.Config) -> State | None:
    return config.stash.get(STATE, None)
