""":func:`check_isolation`: a dirtying battery for any :class:`~mockpool.ServiceSpec`.

Each :class:`Dirtier` is one thing a test might do to a double: write data, change a setting,
close a client, patch an attribute. The battery runs every case in a pool of one instance, so
the second lease gets the instance the first one dirtied, and checks it is pristine::

    report = await check_isolation(
        my_service(),
        [Dirtier("pragma", lambda db: db.execute("pragma foreign_keys = off"),
                 gone=lambda db: db.execute("pragma foreign_keys").fetchone() == (1,))],
        pristine=lambda db: db.execute("select count(*) from users").fetchone() == (3,),
    )

A case ends one of four ways: ``reset`` (the reset hook cleaned it), ``recovered`` (the reset
failed and recovery replaced the instance: clean, at a rebuild's cost), ``caught``
(isolation-verify saw the dirt and recovery replaced the instance) or ``leaked`` (the second
lease saw it). ``leaked`` always fails; ``strict=True`` demands ``reset`` for every case and a
fingerprint that sees every dirtier.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ..isolation import fingerprint_hook
from ..pool import MockPool
from ..spec import ServiceSpec
from .contract import ContractError

if TYPE_CHECKING:
    from ..core import Entry
    from ..lease import Lease

__all__ = ("Dirtier", "IsolationCase", "IsolationReport", "Outcome", "check_isolation")

Outcome = Literal["reset", "recovered", "caught", "leaked"]

#: A check run in a lease: ``(handle) -> None | bool``, sync or async. It fails by raising
#: (``AssertionError`` or any other exception) or by returning ``False``.
Check = Callable[[Any], object]


@dataclass(frozen=True, slots=True)
class Dirtier:
    """One way a test can dirty a double.

    :param name: names the case in the report.
    :param dirty: ``(handle) -> None``, sync or async: what the test does in its lease.
    :param gone: a :data:`Check` run in the next lease: the dirt is gone.
    :param visible: whether the service's fingerprint must tell the dirtied instance from a
        new one (checked with ``strict=True``); False for state no fingerprint can see.
    """

    name: str
    dirty: Callable[[Any], object]
    gone: Check | None = None
    visible: bool = True


@dataclass(frozen=True, slots=True)
class IsolationCase:
    """How one dirtier ended.

    :param visible: whether the fingerprint changed when the instance was dirtied (None: the
        service has no fingerprint or snapshot hook).
    :param detail: what the next lease saw, for a leak; what verify found, for a catch.
    """

    name: str
    outcome: Outcome
    visible: bool | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class IsolationReport:
    """The battery's result for one service."""

    service: str
    cases: tuple[IsolationCase, ...]

    @property
    def leaked(self) -> tuple[IsolationCase, ...]:
        return tuple(case for case in self.cases if case.outcome == "leaked")

    def __str__(self) -> str:
        width = max((len(case.name) for case in self.cases), default=4)
        lines = [f"isolation battery of service {self.service!r}:"]
        for case in self.cases:
            seen = {True: "fingerprint sees it", False: "fingerprint blind", None: "fingerprint not checked"}
            line = f"  {case.name.ljust(width)}  {case.outcome:<9}  {seen[case.visible]}"
            lines.append(f"{line}  {case.detail}".rstrip())
        return "\n".join(lines)


async def check_isolation(
    spec: ServiceSpec,
    dirtiers: Sequence[Dirtier],
    *,
    pristine: Check | None = None,
    members: Sequence[ServiceSpec] | Mapping[str, ServiceSpec] | None = None,
    isolation_verify: bool = False,
    strict: bool = False,
    tasks: int = 0,
    instances: int = 2,
) -> IsolationReport:
    """Run each dirtier in a lease, then check that the next lease on the same instance is
    pristine: ``pristine`` and the dirtier's own ``gone`` both pass.

    :param pristine: a :data:`Check` that a lease's instance is as new (data, settings).
    :param members: the member specs of a group (``depends_on``), in order or by name.
    :param isolation_verify: run the pool in isolation-verify mode.
    :param strict: fail unless every case is cleaned by the reset itself (``reset``) and, for
        dirtiers marked ``visible``, seen by the fingerprint.
    :param tasks: also run this many concurrent leases over ``instances`` instances, each
        checking it is pristine and then dirtying with the next dirtier in turn.
    :returns: the report, also when it passes.
    :raises ContractError: a case leaked (or, with ``strict``, was not cleaned by the reset or
        not seen by the fingerprint); the message holds the whole report.
    """
    _check_arguments(spec, dirtiers, tasks, instances)
    if not dirtiers:
        raise ContractError(f"service {spec.name!r}: check_isolation needs at least one Dirtier")
    member_specs = _member_specs(spec, members)
    cases = [await _one_case(spec, member_specs, dirtier, pristine, isolation_verify) for dirtier in dirtiers]
    if tasks:
        cases.append(
            await _concurrent(spec, member_specs, dirtiers, pristine, isolation_verify, tasks, instances)
        )
    report = IsolationReport(spec.name, tuple(cases))
    failed = [
        case
        for case in report.cases
        if case.outcome == "leaked"
        or (strict and case.outcome != "reset")
        or (strict and case.visible is False and _dirtier(dirtiers, case.name).visible)
    ]
    if failed:
        raise ContractError(
            f"service {spec.name!r}: {len(failed)} isolation case(s) failed "
            f"({', '.join(case.name for case in failed)}):\n{report}"
        )
    return report


def _check_arguments(spec: object, dirtiers: object, tasks: object, instances: object) -> None:
    """Refuse arguments of the wrong kind before any pool is made, naming the fix (a lone
    Dirtier, or a negative ``tasks``, would otherwise fail obscurely or check nothing)."""
    if not isinstance(spec, ServiceSpec):
        raise TypeError(f"check_isolation() needs a ServiceSpec, not {type(spec).__name__}: {spec!r}")
    if isinstance(dirtiers, Dirtier):
        raise TypeError(f"service {spec.name!r}: dirtiers= is one Dirtier; pass a list: [Dirtier(...)]")
    bad = (
        [d for d in dirtiers if not isinstance(d, Dirtier)] if isinstance(dirtiers, Sequence) else [dirtiers]
    )
    if bad:
        raise TypeError(
            f"service {spec.name!r}: dirtiers= must be a list of Dirtier(name, dirty, gone=...), "
            f"not {bad[0]!r}"
        )
    for label, value, least in (("tasks", tasks, 0), ("instances", instances, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"service {spec.name!r}: {label}={value!r} must be a whole number >= {least}")


def _dirtier(dirtiers: Sequence[Dirtier], name: str) -> Dirtier:
    return next((d for d in dirtiers if d.name == name), Dirtier(name, _no_op, visible=False))


def _no_op(handle: object) -> None:
    del handle


def _member_specs(
    spec: ServiceSpec, members: Sequence[ServiceSpec] | Mapping[str, ServiceSpec] | None
) -> list[ServiceSpec]:
    by_name = dict(members) if isinstance(members, Mapping) else {m.name: m for m in members or ()}
    missing = [dep for dep in spec.depends_on if dep not in by_name]
    if missing:
        raise ContractError(
            f"service {spec.name!r} is a group over {spec.depends_on!r}; pass the member specs "
            f"(missing: {', '.join(map(repr, missing))}) as members=[...]"
        )
    return [by_name[dep] for dep in spec.depends_on]


def _pool(
    spec: ServiceSpec, member_specs: list[ServiceSpec], isolation_verify: bool, instances: int
) -> MockPool:
    pool = MockPool(name=f"isolation-{spec.name}", isolation_verify=isolation_verify, supervise=False)
    for member in member_specs:
        # Room for every group instance and a lease of their own.
        pool.register(dataclasses.replace(member, min_size=0, max_size=2 * instances))
    pool.register(dataclasses.replace(spec, min_size=0, max_size=instances))
    return pool


async def _one_case(
    spec: ServiceSpec,
    member_specs: list[ServiceSpec],
    dirtier: Dirtier,
    pristine: Check | None,
    isolation_verify: bool,
) -> IsolationCase:
    pool = _pool(spec, member_specs, isolation_verify, 1)
    async with pool:
        lease: Lease[Any] = pool.acquire(spec.name)
        async with lease as handle:
            problem = await _failed(pristine, handle)
            if problem is not None:
                raise ContractError(
                    f"service {spec.name!r}: a new instance fails the pristine check ({problem}); "
                    "fix the check or the factory"
                )
            entry = lease._held()
            before = await _fingerprints(pool, spec, entry)
            await _call(dirtier.dirty, handle)
            after = await _fingerprints(pool, spec, entry)
        visible = None if before is None else before != after
        async with pool.acquire(spec.name) as handle:
            # Taken in the second lease: any recovery of the one instance has ended by now.
            stats = pool.stats(spec.name)
            problems = [
                p for p in (await _failed(pristine, handle), await _failed(dirtier.gone, handle)) if p
            ]
        if problems:
            return IsolationCase(dirtier.name, "leaked", visible, "; ".join(problems))
        if stats.isolation_failures:
            found = pool.service_pools[spec.name].last_isolation_failure or ""
            return IsolationCase(dirtier.name, "caught", visible, found)
        if stats.reset_failures or sum(stats.recoveries.values()):
            error = pool.service_pools[spec.name].last_error
            return IsolationCase(dirtier.name, "recovered", visible, f"the reset failed: {error!r}")
        return IsolationCase(dirtier.name, "reset", visible)


async def _concurrent(
    spec: ServiceSpec,
    member_specs: list[ServiceSpec],
    dirtiers: Sequence[Dirtier],
    pristine: Check | None,
    isolation_verify: bool,
    tasks: int,
    instances: int,
) -> IsolationCase:
    """Many leases over few instances: each checks that every dirt is gone, then dirties."""
    pool = _pool(spec, member_specs, isolation_verify, instances)
    problems: list[str] = []

    async def one(i: int) -> None:
        dirtier = dirtiers[i % len(dirtiers)]
        async with pool.acquire(spec.name) as handle:
            for check, label in [(pristine, "pristine"), *((d.gone, d.name) for d in dirtiers)]:
                problem = await _failed(check, handle)
                if problem is not None:
                    problems.append(f"lease {i}: {label}: {problem}")
            await _call(dirtier.dirty, handle)

    async with pool:
        async with anyio.create_task_group() as tg:
            for i in range(tasks):
                tg.start_soon(one, i)
        pool.check_invariants()
    name = f"{tasks} concurrent leases on {instances} instances"
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return IsolationCase(name, "leaked", None, "; ".join(problems[:3]) + more)
    return IsolationCase(name, "reset", None)


async def _fingerprints(pool: MockPool, spec: ServiceSpec, entry: Entry) -> list[Any] | None:
    """The fingerprints of a leased entry and of its members at every depth, or None if it
    has no hook."""
    hook = fingerprint_hook(spec)
    if hook is None:
        return None
    prints = [await _call(hook, entry.instance)]
    for path, member in pool.service_pools[spec.name].member_paths:
        member_hook = fingerprint_hook(member.spec)
        if member_hook is not None:
            prints.append(await _call(member_hook, entry.member_at(path).instance))
    return prints


async def _call(fn: Callable[[Any], object], arg: Any) -> Any:
    result = fn(arg)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _failed(check: Check | None, handle: Any) -> str | None:
    """Run ``check``; a description of its failure, or None if it passed."""
    if check is None:
        return None
    try:
        result = await _call(check, handle)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "returned False" if result is False else None
