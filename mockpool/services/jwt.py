"""``jwt_service()``: sign and verify real JSON Web Tokens with PyJWT.

The instance is a :class:`JwtDouble`: ``sign(claims, expires_in=...)`` and ``verify(token)``
with real signatures, so a test exercises the same failure modes as production: ``alg: none``,
forged signatures and expired tokens are rejected with PyJWT's own errors.

Clean by construction: every attribute of the instance (the algorithm, the keys, ``issuer``,
``leeway``, a method a test patched on the instance, anything a test added) is rebuilt at each
reset from a pristine copy taken at creation, the revoked ids start as a new empty set, and a
class a test swapped in is swapped back; a patch on the instance still active is stopped first.
The keys themselves are immutable and shared, never copied.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import ServiceConfigError
from ..spec import ServiceSpec
from ._common import active_patches, build_spec, end_patches, require

__all__ = ("DEFAULT_SECRET", "JwtDouble", "jwt_service")

#: The default HMAC secret: 64 bytes, the length PyJWT asks of an HS512 key (32 for HS256,
#: 48 for HS384), so no algorithm the double offers warns ``InsecureKeyLengthWarning`` with it.
DEFAULT_SECRET = "mockpool-test-secret-do-not-use-in-production-64-bytes-for-HS512"

_HMAC = ("HS256", "HS384", "HS512")


class JwtDouble:
    """Signs and verifies tokens with one key and one algorithm; remembers revoked token ids."""

    # ``__dict__`` holds everything a test can change; the pristine copy (and the class, which a
    # test can swap for a subclass of its own) lives in slots, out of its reach (and of
    # ``vars()``, so the copy never copies itself).
    __slots__ = ("__dict__", "_class", "_template")

    def __init__(
        self,
        jwt_module: Any,
        *,
        algorithm: str,
        signing_key: Any,
        verifying_key: Any,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        self._jwt = jwt_module
        self.algorithm = algorithm
        self.issuer = issuer
        self.leeway = leeway
        self._signing_key = signing_key
        self._verifying_key = verifying_key
        #: ``jti`` of the tokens revoked during the lease.
        self.revoked: set[str] = set()
        self._template: dict[str, Any] = dict(vars(self))
        self._class: type[JwtDouble] = type(self)

    @property
    def token_error(self) -> type[Exception]:
        """PyJWT's ``InvalidTokenError``, the base class of every rejection :meth:`verify` raises."""
        error: type[Exception] = self._jwt.InvalidTokenError
        return error

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        expires_in: float | None = 3600.0,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """A signed token carrying ``claims`` plus ``iat``, ``jti`` (unless given) and, unless
        ``expires_in`` is None, ``exp`` (a negative ``expires_in`` makes an expired token)."""
        now = int(time.time())
        payload: dict[str, Any] = {"iat": now, "jti": uuid.uuid4().hex, **claims}
        if expires_in is not None:
            payload.setdefault("exp", now + int(expires_in))
        if self.issuer is not None:
            payload.setdefault("iss", self.issuer)
        token: str = self._jwt.encode(payload, self._signing_key, algorithm=self.algorithm, headers=headers)
        return token

    def verify(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        """The claims of a valid token. Raises PyJWT's errors: ``InvalidAlgorithmError`` for
        another algorithm (``none`` included), ``InvalidSignatureError``, ``ExpiredSignatureError``,
        and ``InvalidTokenError`` for a revoked token."""
        claims: dict[str, Any] = self._jwt.decode(
            token,
            self._verifying_key,
            algorithms=[self.algorithm],
            audience=audience,
            issuer=self.issuer,
            leeway=self.leeway,
        )
        jti = claims.get("jti")
        if jti is not None and jti in self.revoked:
            raise self._jwt.InvalidTokenError(f"token {jti!r} was revoked")
        return claims

    def revoke(self, token_or_jti: str) -> str:
        """Revoke a token (given whole, or by its ``jti``) for the rest of the lease; returns the jti."""
        jti = token_or_jti
        if token_or_jti.count(".") == 2:
            unverified = self._jwt.decode(token_or_jti, options={"verify_signature": False})
            jti = unverified.get("jti")
            if not isinstance(jti, str):
                raise ValueError("the token has no 'jti' claim, so it cannot be revoked")
        self.revoked.add(jti)
        return jti

    def reset(self) -> None:
        """Rebuild every attribute from the pristine copy: options, keys, patched methods; and
        put back the class a test swapped (``tokens.__class__ = Lenient`` overrides ``verify``);
        first, stop the patches on the instance that the lease left active (``mocker.patch.object(
        tokens, "verify")``: its teardown, after the lease, would delete ``verify`` from the
        rebuilt instance and fail)."""
        patches = active_patches()
        if patches:
            end_patches(patches, (id(self),))
        if type(self) is not self._class:
            self.__class__ = self._class
        state = vars(self)
        state.clear()
        state.update(self._template)
        state["revoked"] = set()

    def snapshot(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "issuer": self.issuer, "revoked": frozenset(self.revoked)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.reset()
        self.revoked = set(state["revoked"])

    def fingerprint(self) -> dict[str, Any]:
        """Every attribute, as comparable values: plain options by value, keys, the PyJWT
        module and patched callables by identity (a test that swaps one is seen); and the class."""
        state = {name: _comparable(value) for name, value in vars(self).items()}
        state["__class__"] = _comparable(type(self))
        return state

    def health(self) -> bool:
        """A round trip through sign and verify works."""
        # A short HMAC secret is the suite's choice: PyJWT's InsecureKeyLengthWarning reaches
        # the test's own sign and verify calls, not the pool's checks (under
        # filterwarnings = error it would fail every check). PyJWT < 2.10 has no such warning.
        short_key = getattr(self._jwt, "InsecureKeyLengthWarning", None)
        with warnings.catch_warnings():
            if short_key is not None:
                warnings.simplefilter("ignore", short_key)
            return bool(self.verify(self.sign({"sub": "health"}, expires_in=60))["sub"] == "health")

    def __repr__(self) -> str:
        return f"<JwtDouble {self.algorithm} revoked={len(self.revoked)}>"


def _comparable(value: Any) -> Any:
    if value is None or isinstance(value, str | bytes | int | float):
        return value
    if isinstance(value, set | frozenset):
        return frozenset(value)
    return (type(value).__name__, id(value))


def jwt_service(
    name: str = "jwt",
    *,
    secret: str | bytes = DEFAULT_SECRET,
    algorithm: str = "HS256",
    private_key: Any = None,
    issuer: str | None = None,
    leeway: float = 0.0,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """A token service over PyJWT: HS256 with ``secret`` by default, or RS256.

    :param secret: the HMAC key for HS256/384/512. Any key PyJWT takes is accepted, as the
        app under test uses it (``secret="test"``); PyJWT warns (``InsecureKeyLengthWarning``)
        when a token is signed or verified with a key shorter than 32/48/64 bytes, and that
        warning reaches the test.
    :param algorithm: ``"HS256"`` (default), ``"HS384"``, ``"HS512"`` or ``"RS256"``.
    :param private_key: RS256 only: a ``cryptography`` RSA private key or PEM; by default one
        2048-bit key pair is generated per spec (once, not per instance).
    :param issuer: set as ``iss`` when signing and required when verifying.
    :param leeway: seconds of clock skew tolerated on ``exp``.
    :raises MissingExtraError: PyJWT (or, for RS256, cryptography) is not installed.
    """
    jwt_mod = require("jwt", extra="jwt", service=name)
    if algorithm in _HMAC:
        if not isinstance(secret, str | bytes):
            raise ServiceConfigError(
                "secret",
                secret,
                f"is a {type(secret).__name__}; pass the HMAC key as str or bytes",
                service=name,
            )
        key_bytes = secret.encode() if isinstance(secret, str) else secret
        signing_key: Any = key_bytes
        verifying_key: Any = key_bytes
    elif algorithm == "RS256":
        rsa = require("cryptography.hazmat.primitives.asymmetric.rsa", extra="jwt", service=name)
        if private_key is None:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif isinstance(private_key, str | bytes):
            serialization = require("cryptography.hazmat.primitives.serialization", extra="jwt", service=name)
            pem = private_key.encode() if isinstance(private_key, str) else private_key
            private_key = serialization.load_pem_private_key(pem, password=None)
        signing_key, verifying_key = private_key, private_key.public_key()
    else:
        raise ServiceConfigError(
            "algorithm", algorithm, "is not supported; use 'HS256', 'HS384', 'HS512' or 'RS256'", service=name
        )

    def factory() -> JwtDouble:
        return JwtDouble(
            jwt_mod,
            algorithm=algorithm,
            signing_key=signing_key,
            verifying_key=verifying_key,
            issuer=issuer,
            leeway=leeway,
        )

    return build_spec(
        name,
        options,
        factory=factory,
        reset=JwtDouble.reset,
        health_check=JwtDouble.health,
        snapshot=JwtDouble.snapshot,
        restore=JwtDouble.restore,
        fingerprint=JwtDouble.fingerprint,
        min_size=min_size,
        max_size=max_size,
    )
