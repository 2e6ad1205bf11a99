"""JWT verification with PyJWT, with the choices RFC 8725 asks a caller to make.

The algorithms are pinned in configuration and never read from the token (§3.1); one
verifier uses one key with one algorithm family, so an RSA public key can never be
used as an HMAC secret (§3.1, PyJWT CVE-2022-29217). ``exp`` is required by default.
Every PyJWT "bad token" error becomes the same 401; the log names the rule that failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jwt

from .errors import ConfigurationError, InvalidToken, ServiceUnavailable
from .verifiers import Identity

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
_MIN_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

# PyJWT's error classes, most specific first, mapped to our log reason codes.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidIssuedAtError, "bad_iat"),
    (jwt.InvalidAudienceError, "bad_audience"),
    (jwt.InvalidIssuerError, "bad_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "bad_algorithm"),
    (jwt.DecodeError, "malformed"),
)


def _reason(exc: jwt.InvalidTokenError) -> str:
    for cls, reason in _REASONS:
        if isinstance(exc, cls):
            return reason
    return "invalid_jwt"


class JWTVerifier:
    """Verify signed JWTs with a fixed key and a pinned list of algorithms.

    Args:
        key: HMAC secret (``str``/``bytes``) for ``HS*``; a PEM public key or a
            ``cryptography`` public key object for ``RS*``/``PS*``/``ES*``/``EdDSA``.
        algorithms: accepted ``alg`` values, all from one family. Required.
        audience: expected ``aud``; tokens carrying an ``aud`` are refused without it.
        issuer: expected ``iss``, compared exactly.
        leeway: seconds of clock skew allowed on ``exp``/``nbf``/``iat``.
        require: claims that must be present (``exp`` by default).
        subject_claim: claim used as :attr:`Identity.subject`.
        typ: when set, the header ``typ`` must equal it (RFC 8725 §3.11).

    Raises:
        ConfigurationError: no algorithms, ``none``, mixed families, short HMAC key.
    """

    def __init__(
        self,
        *,
        key: Any,
        algorithms: Sequence[str],
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        require: Sequence[str] = ("exp",),
        subject_claim: str = "sub",
        typ: str | None = None,
    ) -> None:
        if isinstance(algorithms, str) or not algorithms:
            raise ConfigurationError("algorithms must be a non-empty list, e.g. ['HS256']")
        try:
            families = {type(jwt.get_algorithm_by_name(name)) for name in algorithms}
        except NotImplementedError:
            raise ConfigurationError(f"unsupported JWT algorithm in {list(algorithms)}") from None
        if any(name.lower() == "none" for name in algorithms):
            raise ConfigurationError("the 'none' algorithm is never accepted")
        if len(families) != 1:
            raise ConfigurationError("one verifier, one algorithm family (RFC 8725 §3.1)")
        if leeway < 0:
            raise ConfigurationError("leeway must be >= 0")
        for name in algorithms:
            minimum = _MIN_HMAC_KEY_BYTES.get(name)
            if minimum is None:
                continue
            secret = key.encode() if isinstance(key, str) else key
            if len(secret) < minimum:
                raise ConfigurationError(f"{name} needs a secret of at least {minimum} bytes")
        try:
            # Parse the key once, bound to its family; PyJWT refuses PEM public keys as
            # HMAC secrets here.
            self._key = jwt.get_algorithm_by_name(algorithms[0]).prepare_key(key)
        except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"key does not suit {algorithms[0]}: {exc}") from None
        self.algorithms = list(algorithms)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.require = list(require)
        self.subject_claim = subject_claim
        self.typ = typ
        self._jwt = jwt.PyJWT()

    def __call__(self, token: str, /) -> Identity:
        try:
            decoded = self._jwt.decode_complete(
                token,
                key=self._key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": self.require},
            )
        except jwt.PyJWKClientError as exc:
            raise ServiceUnavailable("key_fetch_failed", detail=type(exc).__name__) from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(_reason(exc), detail=type(exc).__name__) from None
        if self.typ is not None and decoded["header"].get("typ") != self.typ:
            raise InvalidToken("bad_typ")
        claims: dict[str, Any] = decoded["payload"]
        exp = claims.get("exp")
        return Identity(
            subject=str(claims.get(self.subject_claim, "")),
            claims=claims,
            # Accepted until exp + leeway, so that is when an open connection closes.
            expires_at=float(exp) + self.leeway if isinstance(exp, int | float) else None,
        )

    def __repr__(self) -> str:
        return f"JWTVerifier(algorithms={self.algorithms!r}, audience={self.audience!r})"
