"""``@pytest.mark.mockpool(*services, allow_leak=False)``: its registration, what collection
reads from it (the services to create ahead of the test; a lease allowed to outlive it), and
the check, as the test is set up, that it names services the pool has."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .state import ALLOW_LEAK

if TYPE_CHECKING:
    from ..pool import MockPool
    from .state import State


def register_marker(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mockpool(*services, allow_leak=False): the services this test acquires (the pool "
        "creates them ahead of it); allow_leak=True lets a lease outlive the test.",
    )


def read_mark(state: State, item: pytest.Item) -> None:
    """Keep what ``item``'s mark says: the services it acquires (to create ahead of it) and
    whether a lease may outlive it."""
    mark = item.get_closest_marker("mockpool")
    if mark is not None:
        names = tuple(str(a) for a in mark.args)
        if names:
            state.marked[item.nodeid] = names
            state.planned.update(names)
        item.stash[ALLOW_LEAK] = bool(mark.kwargs.get("allow_leak", False))


def check_mark(pool: MockPool, item: pytest.Item) -> None:
    """Fail a test whose ``@pytest.mark.mockpool`` names a service the pool does not have
    (a typo would otherwise only leave it unwarmed), with the suggestion ``acquire`` gives."""
    mark = item.get_closest_marker("mockpool")
    if mark is None:
        return
    from ..errors import UnknownServiceError

    problems = [
        str(UnknownServiceError(str(name), pool.services, pool=pool.name))
        for name in mark.args
        if name not in pool.service_pools
    ]
    problems += [
        f"unknown keyword {key!r}; the marker takes service names and allow_leak=True"
        for key in mark.kwargs
        if key != "allow_leak"
    ]
    if problems:
        shown = ", ".join([*map(repr, mark.args), *(f"{k}={v!r}" for k, v in mark.kwargs.items())])
        pytest.fail(f"@pytest.mark.mockpool({shown}): " + "; ".join(problems), pytrace=False)
