""":func:`check_double_contract`: a reset instance cannot be told apart from a fresh one, as its
``snapshot`` hook sees it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import MockPoolError
from ..hooks import call_hook
from ..isolation import difference
from ..spec import ServiceSpec

__all__ = ("ContractError", "check_double_contract")


class ContractError(MockPoolError, AssertionError):
    """A service broke the double contract; the message names the service and the difference."""


@dataclass
class _Built:
    """One instance under check: the instance, the handle a test would get, its members."""

    spec: ServiceSpec
    instance: Any
    handle: Any
    members: list[tuple[ServiceSpec, _Built]] = field(default_factory=list)


async def check_double_contract(
    spec: ServiceSpec,
    *,
    mutate: Callable[[Any], Awaitable[object] | object] | None = None,
    members: Sequence[ServiceSpec] | Mapping[str, ServiceSpec] | None = None,
) -> None:
    """Check that ``spec``'s instances are as good as new after a reset.

    With its ``snapshot`` hook, checks that: a fresh instance is healthy; two fresh instances
    have equal snapshots; ``mutate`` (given what a test would receive, the ``bind`` handle if
    any) changes the snapshot; after ``reset`` the snapshot equals the fresh one; a second
    reset changes nothing; the reset instance is healthy; and ``restore`` of the fresh
    snapshot undoes a second ``mutate``. Without ``mutate`` the reset is only checked on a
    clean instance, which proves little: pass one.

    For a group (``depends_on``), pass the member specs in ``members`` (in ``depends_on``
    order, or by name): each group instance is built on its own member instances, which are
    reset with their own reset first, as the pool does.

    :raises ContractError: (an ``AssertionError``) naming the service and what differed.
    """
    name = spec.name
    if spec.snapshot is None or spec.restore is None:
        raise ContractError(
            f"service {name!r}: check_double_contract needs snapshot= and restore= hooks to compare "
            "instances; add them to the ServiceSpec"
        )
    member_specs = _member_specs(spec, members)
    built: list[_Built] = []
    try:
        first = await _build(spec, member_specs, built)
        await _check_health(spec, first, "a fresh instance")
        fresh = await _snapshot(spec, first)
        second = await _build(spec, member_specs, built)
        _same(name, fresh, await _snapshot(spec, second), "two fresh instances have different snapshots")
        if mutate is not None:
            await _mutate(spec, mutate, first, fresh)
        await _reset(spec, first)
        _same(name, fresh, await _snapshot(spec, first), "after reset the snapshot differs from a fresh one")
        await _reset(spec, first)
        _same(name, fresh, await _snapshot(spec, first), "a second reset changed the snapshot")
        await _check_health(spec, first, "an instance after reset")
        if mutate is not None:
            await _mutate(spec, mutate, first, fresh)
        await call_hook(spec.restore, first.instance, fresh)
        for member_spec, member in first.members:
            await _reset(member_spec, member)
        _same(name, fresh, await _snapshot(spec, first), "after restore(fresh snapshot) the snapshot differs")
    finally:
        for item in reversed(built):
            await _destroy(item)


def _member_specs(
    spec: ServiceSpec, members: Sequence[ServiceSpec] | Mapping[str, ServiceSpec] | None
) -> list[ServiceSpec]:
    if not spec.depends_on:
        if members:
            raise ContractError(f"service {spec.name!r} has no depends_on; do not pass members=")
        return []
    by_name = dict(members) if isinstance(members, Mapping) else {m.name: m for m in members or ()}
    missing = [dep for dep in spec.depends_on if dep not in by_name]
    if missing:
        raise ContractError(
            f"service {spec.name!r} is a group over {spec.depends_on!r}; pass the member specs "
            f"(missing: {', '.join(map(repr, missing))}) as members=[...]"
        )
    return [by_name[dep] for dep in spec.depends_on]


async def _build(spec: ServiceSpec, member_specs: list[ServiceSpec], built: list[_Built]) -> _Built:
    members = [(m, await _build(m, [], built)) for m in member_specs]
    instance = await call_hook(spec.factory, *(member.handle for _, member in members))
    handle = await call_hook(spec.bind, instance) if spec.bind is not None else instance
    item = _Built(spec, instance, handle, members)
    built.append(item)
    return item


async def _snapshot(spec: ServiceSpec, item: _Built) -> Any:
    assert spec.snapshot is not None
    return await call_hook(spec.snapshot, item.instance)


async def _reset(spec: ServiceSpec, item: _Built) -> None:
    for member_spec, member in item.members:
        await _reset(member_spec, member)
    if spec.reset is not None:
        await call_hook(spec.reset, item.instance)


async def _mutate(spec: ServiceSpec, mutate: Callable[[Any], object], item: _Built, fresh: Any) -> None:
    result = mutate(item.handle)
    if inspect.isawaitable(result):
        await result
    if await _snapshot(spec, item) == fresh:
        raise ContractError(
            f"service {spec.name!r}: mutate() changed nothing the snapshot sees; either mutate is a "
            "no-op or the snapshot misses the state it wrote, so reset cannot be checked"
        )


async def _check_health(spec: ServiceSpec, item: _Built, what: str) -> None:
    if spec.health_check is None:
        return
    try:
        ok = await call_hook(spec.health_check, item.instance)
    except Exception as exc:
        raise ContractError(f"service {spec.name!r}: health check of {what} raised {exc!r}") from exc
    if ok is False:
        raise ContractError(f"service {spec.name!r}: health check of {what} returned False")


async def _destroy(item: _Built) -> None:
    if item.spec.destroy is not None:
        await call_hook(item.spec.destroy, item.instance)


def _same(name: str, expected: Any, actual: Any, problem: str) -> None:
    if expected == actual:
        return
    raise ContractError(f"service {name!r}: {problem}: {difference(expected, actual)}")
