from __future__ import annotations

import sys

import jwt
import pytest

from mockpool import ServiceConfigError
from mockpool.services import JwtDouble, MissingExtraError, jwt_service

from ._helpers import pool_of


def test_sign_and_verify_round_trip() -> None:
    double = jwt_service(issuer="mockpool").factory()
    token = double.sign({"sub": "u1", "role": "admin"}, expires_in=60)
    claims = double.verify(token)
    assert claims["sub"] == "u1" and claims["role"] == "admin" and claims["iss"] == "mockpool"
    assert claims["exp"] - claims["iat"] == 60
    assert "jti" in claims


def test_alg_none_forged_and_expired_tokens_are_rejected() -> None:
    double = jwt_service().factory()
    unsigned = jwt.encode({"sub": "u1"}, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(jwt.InvalidAlgorithmError):
        double.verify(unsigned)
    forged = jwt.encode({"sub": "u1"}, "another-secret-that-is-long-enough-32b", algorithm="HS256")
    with pytest.raises(jwt.InvalidSignatureError):
        double.verify(forged)
    header, payload, _signature = double.sign({"sub": "u1"}).split(".")
    with pytest.raises(jwt.InvalidSignatureError):
        double.verify(f"{header}.{payload}.AAAA")
    with pytest.raises(jwt.ExpiredSignatureError):
        double.verify(double.sign({"sub": "u1"}, expires_in=-10))


def test_rs256_with_a_generated_key_pair() -> None:
    spec = jwt_service(algorithm="RS256")
    first, second = spec.factory(), spec.factory()
    token = first.sign({"sub": "u1"})
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert second.verify(token)["sub"] == "u1"  # one key pair per spec, shared by its instances
    other = jwt_service(algorithm="RS256").factory()
    with pytest.raises(jwt.InvalidSignatureError):
        other.verify(token)
    hs_token = jwt_service().factory().sign({"sub": "u1"})
    with pytest.raises(jwt.InvalidAlgorithmError):
        first.verify(hs_token)


@pytest.mark.asyncio
async def test_revocations_end_with_the_lease() -> None:
    async with pool_of(jwt_service(max_size=1)) as pool:
        async with pool.acquire("jwt") as tokens:
            assert isinstance(tokens, JwtDouble)
            token = tokens.sign({"sub": "u1"})
            jti = tokens.revoke(token)
            with pytest.raises(jwt.InvalidTokenError, match="revoked"):
                tokens.verify(token)
        async with pool.acquire("jwt") as again:
            assert again is tokens
            assert jti not in again.revoked
            assert again.verify(token)["sub"] == "u1"


@pytest.mark.asyncio
async def test_a_short_secret_is_accepted_and_pyjwt_warns_the_test() -> None:
    """Apps under test use secrets such as "test": accepted as PyJWT accepts them. PyJWT's
    own warning reaches the test's sign and verify, not the pool's health checks."""
    async with pool_of(jwt_service(secret="test")) as pool, pool.acquire("jwt") as tokens:
        with pytest.warns(jwt.InsecureKeyLengthWarning, match="4 bytes"):
            token = tokens.sign({"sub": "u1"})
        with pytest.warns(jwt.InsecureKeyLengthWarning):
            assert jwt.decode(token, "test", algorithms=["HS256"])["sub"] == "u1"
        assert tokens.health()  # the pool's check: under filterwarnings = error a warning would raise


def test_unknown_algorithm_and_a_secret_of_another_type_are_refused_at_build_time() -> None:
    with pytest.raises(ServiceConfigError, match="algorithm='ES999' is not supported"):
        jwt_service(algorithm="ES999")
    with pytest.raises(ServiceConfigError, match="secret=42 is a int; pass the HMAC key as str or bytes"):
        jwt_service(secret=42)  # type: ignore[arg-type]


def test_revoking_a_token_without_jti_is_refused() -> None:
    double = jwt_service().factory()
    with pytest.raises(ValueError, match="no 'jti'"):
        double.revoke(jwt.encode({"sub": "x"}, b"k" * 32, algorithm="HS256"))


def test_missing_pyjwt_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mockpool\[jwt\]'"):
        jwt_service()


@pytest.mark.asyncio
@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
async def test_the_built_in_secret_is_long_enough_for_every_hmac_algorithm(algorithm: str) -> None:
    """Without ``secret=`` the double signs with its own test secret: PyJWT must not warn
    (under ``filterwarnings = error``, an InsecureKeyLengthWarning fails the test) for any
    algorithm it offers. The 45-byte secret it had warned at each HS384/HS512 sign and verify."""
    async with pool_of(jwt_service(algorithm=algorithm)) as pool, pool.acquire("jwt") as tokens:
        token = tokens.sign({"sub": "u1"})  # filterwarnings = error: a warning raises here
        assert jwt.get_unverified_header(token)["alg"] == algorithm
        assert tokens.verify(token)["sub"] == "u1"
