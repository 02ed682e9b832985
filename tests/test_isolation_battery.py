"""The public dirtying battery (``mockpool.testing.check_isolation``) on a toy double: each
outcome (reset, recovered, caught, leaked) is reported as such, and leaks fail."""

from __future__ import annotations

from typing import Any

import pytest

from mockpool import ServiceSpec
from mockpool.testing import ContractError, Dirtier, check_isolation


class Store:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.options = {"strict": True}
        self.closed = False


def _thorough(s: Store) -> None:
    s.data.clear()
    s.options = {"strict": True}


def _sloppy(s: Store) -> None:
    s.data.clear()  # forgets options


def _refuses_closed(s: Store) -> None:
    if s.closed:
        raise RuntimeError("store is closed")
    _thorough(s)


def _spec(reset: Any, *, fingerprint: bool = True) -> ServiceSpec:
    return ServiceSpec(
        name="store",
        factory=Store,
        reset=reset,
        fingerprint=(lambda s: (dict(s.data), dict(s.options), s.closed)) if fingerprint else None,
    )


def _write(s: Store) -> None:
    s.data["k"] = 1


def _loosen(s: Store) -> None:
    s.options["strict"] = False


DIRTIERS = [
    Dirtier("data", _write, gone=lambda s: s.data == {}),
    Dirtier("option", _loosen, gone=lambda s: s.options["strict"] is True),
]


def _pristine(s: Store) -> bool:
    return s.data == {} and s.options == {"strict": True} and not s.closed


@pytest.mark.asyncio
async def test_a_thorough_reset_passes_every_case_strictly() -> None:
    report = await check_isolation(_spec(_thorough), DIRTIERS, pristine=_pristine, strict=True, tasks=20)
    assert [(c.name, c.outcome, c.visible) for c in report.cases] == [
        ("data", "reset", True),
        ("option", "reset", True),
        ("20 concurrent leases on 2 instances", "reset", None),
    ]
    assert report.leaked == ()


@pytest.mark.asyncio
async def test_a_leak_fails_naming_the_case_and_what_the_next_lease_saw() -> None:
    with pytest.raises(ContractError) as info:
        await check_isolation(_spec(_sloppy), DIRTIERS, pristine=_pristine)
    message = str(info.value)
    assert "1 isolation case(s) failed (option)" in message
    assert "option  leaked" in message
    assert "data    reset" in message


@pytest.mark.asyncio
async def test_isolation_verify_catches_what_the_reset_misses() -> None:
    report = await check_isolation(_spec(_sloppy), DIRTIERS, pristine=_pristine, isolation_verify=True)
    case = {c.name: c for c in report.cases}["option"]
    assert case.outcome == "caught"
    assert "{'strict': False}" in case.detail
    with pytest.raises(ContractError, match="option"):
        await check_isolation(
            _spec(_sloppy), DIRTIERS, pristine=_pristine, isolation_verify=True, strict=True
        )


@pytest.mark.asyncio
async def test_a_reset_that_fails_is_recovered_and_strict_rejects_the_rebuild() -> None:
    closer = Dirtier("closed", lambda s: setattr(s, "closed", True), gone=lambda s: not s.closed)
    report = await check_isolation(_spec(_refuses_closed), [closer], pristine=_pristine)
    assert report.cases[0].outcome == "recovered"
    assert "store is closed" in report.cases[0].detail
    with pytest.raises(ContractError, match="closed"):
        await check_isolation(_spec(_refuses_closed), [closer], pristine=_pristine, strict=True)


@pytest.mark.asyncio
async def test_concurrent_leases_see_each_others_dirt_when_the_reset_misses_it() -> None:
    with pytest.raises(ContractError, match="concurrent leases on 2 instances  leaked"):
        await check_isolation(_spec(_sloppy), DIRTIERS[1:], tasks=10)


@pytest.mark.asyncio
async def test_strict_needs_a_fingerprint_that_sees_each_visible_dirtier() -> None:
    blind = ServiceSpec(name="store", factory=Store, reset=_thorough, fingerprint=lambda s: dict(s.data))
    report = await check_isolation(blind, DIRTIERS, pristine=_pristine)
    assert {c.name: c.visible for c in report.cases} == {"data": True, "option": False}
    with pytest.raises(ContractError, match="fingerprint blind"):
        await check_isolation(blind, DIRTIERS, pristine=_pristine, strict=True)
    invisible = [DIRTIERS[0], Dirtier("option", _loosen, visible=False)]
    await check_isolation(blind, invisible, pristine=_pristine, strict=True)


@pytest.mark.asyncio
async def test_a_pristine_check_that_fails_on_a_new_instance_is_reported_as_such() -> None:
    with pytest.raises(ContractError, match="a new instance fails the pristine check"):
        await check_isolation(_spec(_thorough), DIRTIERS, pristine=lambda s: False)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        # Ran one concurrent case of -1 leases, which "passed": nothing was checked.
        ({"tasks": -1}, ValueError, r"^service 'store': tasks=-1 must be a whole number >= 0$"),
        # Failed as "max_size=0 must be >= 1", an option the caller never gave.
        ({"instances": 0, "tasks": 5}, ValueError, r"instances=0 must be a whole number >= 1$"),
        ({"dirtiers": DIRTIERS[0]}, TypeError, r"dirtiers= is one Dirtier; pass a list"),
        ({"dirtiers": [_loosen]}, TypeError, r"dirtiers= must be a list of Dirtier\(name, dirty"),
        ({"spec": "store"}, TypeError, r"^check_isolation\(\) needs a ServiceSpec, not str: 'store'$"),
    ],
)
async def test_bad_arguments_are_refused_before_any_lease(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"spec": _spec(_thorough), "dirtiers": DIRTIERS, **kwargs}
    with pytest.raises(error, match=message):
        await check_isolation(**arguments)
