"""``--baseline``: the same tests, each on fresh doubles made for it and destroyed after.

What a suite without mockpool does: every test builds its doubles (a group builds its members
first, as the group's factory needs them), binds them to the running loop, uses them and closes
them. Same specs, same factories, same process, same loop: the ratio of the two wall times is
what the pool saves. The time spent making and destroying doubles is measured apart, so the
report can also give the ratio of the per-test cost of a double alone.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from mockpool import MockPool, ServiceSpec

__all__ = ("FreshDouble", "FreshUse", "double_costs")


async def _call(hook: Any, *args: Any) -> Any:
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass
class _Built:
    spec: ServiceSpec
    instance: Any
    handle: Any
    members: dict[str, _Built] = field(default_factory=dict)


class FreshDouble:
    """What a baseline test holds: a new instance, its members; never degraded."""

    __slots__ = ("_built", "_name", "_started", "_use")

    def __init__(self, use: FreshUse, name: str) -> None:
        self._use = use
        self._name = name
        self._built: _Built | None = None
        self._started = 0.0

    @property
    def instance(self) -> Any:
        assert self._built is not None
        return self._built.handle

    @property
    def members(self) -> dict[str, Any]:
        assert self._built is not None
        return {name: member.handle for name, member in self._built.members.items()}

    @property
    def degraded(self) -> bool:
        return False

    @property
    def tier(self) -> str | None:
        return None

    def discard(self) -> None:
        """Nothing to do: the instance is destroyed at the end of the block anyway."""

    async def __aenter__(self) -> Self:
        started = time.perf_counter()
        self._built = await self._use.build(self._name)
        self._use.double_s += time.perf_counter() - started
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        started = time.perf_counter()
        if self._built is not None:
            await self._use.destroy(self._built)
        self._use.double_s += time.perf_counter() - started


class FreshUse:
    """The tests' ``use`` for the baseline: a fresh double per ``async with``."""

    def __init__(self, specs: Mapping[str, ServiceSpec] | list[ServiceSpec]) -> None:
        self.specs = dict(specs) if isinstance(specs, Mapping) else {s.name: s for s in specs}
        #: Seconds spent making and destroying doubles (the part the pool replaces).
        self.double_s = 0.0
        self.created = 0

    def __call__(self, name: str) -> FreshDouble:
        return FreshDouble(self, name)

    async def build(self, name: str) -> _Built:
        spec = self.specs[name]
        members = {dep: await self.build(dep) for dep in spec.depends_on}
        instance = await _call(spec.factory, *(m.handle for m in members.values()))
        handle = await _call(spec.bind, instance) if spec.bind is not None else instance
        self.created += 1
        return _Built(spec, instance, handle, members)

    async def destroy(self, built: _Built) -> None:
        if built.spec.destroy is not None:
            await _call(built.spec.destroy, built.instance)
        for member in built.members.values():
            await self.destroy(member)


async def double_costs(
    pool: MockPool, fresh: FreshUse, names: list[str], *, rounds: int = 200
) -> dict[str, tuple[float, float]]:
    """Seconds per double, per service: ``(pooled, fresh)``. Pooled: an acquire and release
    (with its reset) on the warm pool, no contention; fresh: build (members included), bind
    and destroy. Measured serially, after the run, so the two are comparable."""
    costs: dict[str, tuple[float, float]] = {}
    for name in names:
        started = time.perf_counter()
        for _ in range(rounds):
            async with pool.acquire(name):
                pass
        pooled = (time.perf_counter() - started) / rounds
        started = time.perf_counter()
        for _ in range(rounds // 4):
            await fresh.destroy(await fresh.build(name))
        costs[name] = (pooled, (time.perf_counter() - started) / (rounds // 4))
    return costs
