"""The service graph the stress suite runs against: the seed's, from
:func:`mockpool.services.seed_specs`, sized for many concurrent tests.

``seed_specs`` gives each member twice the groups' ``max_size`` ("room for every group instance
and as many direct leases"), but ``database`` is a member of *two* groups (``device_session``
and ``dashboard``): at full size the groups would own all of it and a test acquiring the
database directly would wait for ever (groups keep their members). It gets three times here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from mockpool import MockPool, ServiceSpec
from mockpool.services import seed_specs

__all__ = ("GROUP_MAX_SIZE", "register_graph", "stress_specs")

#: ``max_size`` of the groups (device_session, dashboard); members get more (see above).
GROUP_MAX_SIZE = 32


def stress_specs(
    *, max_size: int = GROUP_MAX_SIZE, wrap: Callable[[ServiceSpec], ServiceSpec] | None = None
) -> list[ServiceSpec]:
    """The seed's graph, members first; ``wrap`` (fault injection) is applied to each spec."""
    specs = seed_specs(max_size=max_size)
    groups_of: dict[str, int] = {}
    for spec in specs:
        for member in spec.depends_on:
            groups_of[member] = groups_of.get(member, 0) + 1
    sized = []
    for spec in specs:
        if not spec.depends_on:
            # Room for each group built on it, plus as many direct leases.
            spec = dataclasses.replace(spec, max_size=(groups_of.get(spec.name, 0) + 1) * max_size)
        sized.append(wrap(spec) if wrap is not None else spec)
    return sized


def register_graph(pool: MockPool, specs: list[ServiceSpec]) -> tuple[str, ...]:
    for spec in specs:
        pool.register(spec)
    return tuple(spec.name for spec in specs)
