"""Dirtying battery of jwt_service (issue 12): options, keys and patched methods of one lease
never reach the next; isolation-verify sees each when the reset is left out."""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import jwt
import pytest

from mockpool.services import JwtDouble, jwt_service
from mockpool.testing import Dirtier, check_isolation

OTHER_SECRET = b"another-secret-that-is-long-enough-for-hs256"


def _pristine(tokens: JwtDouble) -> None:
    token = tokens.sign({"sub": "u1"})
    assert tokens.verify(token)["sub"] == "u1"
    assert "iss" not in tokens.verify(token)
    assert tokens.revoked == set()


def _expired_is_rejected(tokens: JwtDouble) -> None:
    """After one test set a leeway, an expired token must be refused again."""
    with pytest.raises(jwt.ExpiredSignatureError):
        tokens.verify(tokens.sign({"sub": "u1"}, expires_in=-60))


def _leeway(tokens: JwtDouble) -> None:
    tokens.leeway = 3600


def _issuer(tokens: JwtDouble) -> None:
    tokens.issuer = "https://evil.example"


def _no_issuer(tokens: JwtDouble) -> None:
    assert tokens.issuer is None
    assert "iss" not in tokens.verify(tokens.sign({"sub": "u1"}))


def _algorithm(tokens: JwtDouble) -> None:
    tokens.algorithm = "HS512"


def _hs256(tokens: JwtDouble) -> None:
    assert jwt.get_unverified_header(tokens.sign({"sub": "u1"}))["alg"] == "HS256"


def _keys(tokens: Any) -> None:
    tokens._signing_key = tokens._verifying_key = OTHER_SECRET


def _foreign_key_is_rejected(tokens: JwtDouble) -> None:
    with pytest.raises(jwt.InvalidSignatureError):
        tokens.verify(jwt.encode({"sub": "u1"}, OTHER_SECRET, algorithm="HS256"))


def _patched_verify(tokens: Any) -> None:
    tokens.verify = lambda token, **kwargs: {"sub": "anyone"}


def _forged_is_rejected(tokens: JwtDouble) -> None:
    with pytest.raises(jwt.InvalidTokenError):  # a bad signature, or (RS256) the wrong algorithm
        tokens.verify(jwt.encode({"sub": "u1"}, OTHER_SECRET, algorithm="HS256"))


class _Lenient(JwtDouble):
    """A test's own subclass, swapped in to change one instance (a property such as
    ``token_error`` cannot be set on the instance itself)."""

    __slots__ = ()

    def verify(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        return {"sub": "anyone"}


def _class_swapped(tokens: JwtDouble) -> None:
    tokens.__class__ = _Lenient


def _own_class(tokens: JwtDouble) -> None:
    assert type(tokens) is JwtDouble
    _forged_is_rejected(tokens)


#: Patches a dirtier started and left for its test's teardown to stop (pytest-mock's
#: ``mocker.patch.object``, ``request.addfinalizer(patcher.stop)``): that teardown runs after
#: the lease has ended, so a check in the next lease plays it first.
_UNTIL_TEARDOWN: list[Any] = []


def _verify_patched_until_teardown(tokens: JwtDouble) -> None:
    _UNTIL_TEARDOWN.append(mock.patch.object(tokens, "verify", return_value={"sub": "anyone"}))
    _UNTIL_TEARDOWN[-1].start()


def _after_teardown(tokens: JwtDouble) -> None:
    while _UNTIL_TEARDOWN:
        _UNTIL_TEARDOWN.pop().stop()  # the earlier test's teardown: must neither fail nor write
    assert "verify" not in vars(tokens)
    _forged_is_rejected(tokens)


def _revoked(tokens: JwtDouble) -> None:
    tokens.revoke("some-jti")


def _added(tokens: Any) -> None:
    tokens.audience = "api"


def _nothing_added(tokens: JwtDouble) -> None:
    assert "audience" not in vars(tokens)


def _revoked_replaced(tokens: Any) -> None:
    tokens.revoked = {"kept-by-identity"}


DIRTIERS = [
    Dirtier("leeway", _leeway, gone=_expired_is_rejected),
    Dirtier("issuer", _issuer, gone=_no_issuer),
    Dirtier("algorithm", _algorithm, gone=_hs256),
    Dirtier("keys", _keys, gone=_foreign_key_is_rejected),
    Dirtier("verify patched on the instance", _patched_verify, gone=_forged_is_rejected),
    Dirtier("revocation", _revoked, gone=lambda tokens: tokens.revoked == set()),
    Dirtier("revoked set replaced", _revoked_replaced, gone=lambda tokens: tokens.revoked == set()),
    Dirtier("attribute added", _added, gone=_nothing_added),
    Dirtier("class swapped for a subclass", _class_swapped, gone=_own_class),
    Dirtier("verify patched until the test's teardown", _verify_patched_until_teardown, gone=_after_teardown),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("isolation_verify", [False, True], ids=["verify-off", "verify-on"])
@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
async def test_every_case_is_reset_and_seen_by_the_fingerprint(
    isolation_verify: bool, algorithm: str
) -> None:
    dirtiers = (
        DIRTIERS if algorithm == "HS256" else [d for d in DIRTIERS if d.name not in ("algorithm", "keys")]
    )
    report = await check_isolation(
        jwt_service(algorithm=algorithm),
        dirtiers,
        pristine=_pristine,
        isolation_verify=isolation_verify,
        strict=True,
    )
    assert {case.outcome for case in report.cases} == {"reset"}


@pytest.mark.asyncio
async def test_many_concurrent_leases_over_few_instances_stay_isolated() -> None:
    await check_isolation(jwt_service(), DIRTIERS, pristine=_pristine, strict=True, tasks=80, instances=3)


@pytest.mark.asyncio
async def test_without_its_reset_isolation_verify_catches_every_case() -> None:
    weakened = dataclasses.replace(jwt_service(), reset=None)
    for dirtier in DIRTIERS:
        report = await check_isolation(weakened, [dirtier], pristine=_pristine, isolation_verify=True)
        assert [case.outcome for case in report.cases] == ["caught"], report


def test_an_issuer_set_at_build_time_is_the_pristine_one() -> None:
    tokens = jwt_service(issuer="mockpool", leeway=5).factory()
    tokens.issuer, tokens.leeway = None, 0
    tokens.reset()
    assert (tokens.issuer, tokens.leeway) == ("mockpool", 5)
    assert tokens.verify(tokens.sign({"sub": "u1"}))["iss"] == "mockpool"
