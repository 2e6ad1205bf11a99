"""JWT verification with PyJWT, with the choices RFC 8725 asks a caller to make.

The algorithms are pinned in configuration and never read from the token (§3.1); one
verifier uses one key with one algorithm family, so an RSA public key can never be
used as an HMAC secret (§3.1, PyJWT CVE-2022-29217). ``exp`` is required by default.
Every PyJWT "bad token" error becomes the same 401; the log names the rule that failed.

Keys come from configuration, or from a JWKS URL fixed in configuration (never from the
token's ``jku``/``x5u``/``jwk`` headers, which are ignored, RFC 8725 §3.10). PyJWT's
``PyJWKClient`` fetches, caches and rotates: an unknown ``kid`` forces at most one fetch
per cooldown, one at a time, and a failed fetch keeps the last good set. A key server
that cannot be reached is a 503 (try again), never a 401.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import jwt

from .errors import ConfigurationError, InvalidToken, ServiceUnavailable
from .verifiers import Identity

#: Clock skew allowed on exp/nbf/iat by default: small, as RFC 8725 §3.9 context suggests.
DEFAULT_LEEWAY = 10.0
#: Largest leeway accepted: beyond a few minutes expiry stops meaning much.
MAX_LEEWAY = 300.0
#: JWKS fetch timeout: well under the 5 s verifier limit and the 10 s handshake deadline.
DEFAULT_JWKS_TIMEOUT = 3.0
#: Minimum seconds between fetches forced by unknown ``kid`` values (no amplification).
DEFAULT_JWKS_COOLDOWN = 30.0
#: A key set this old is fetched again on next use.
DEFAULT_JWKS_LIFESPAN = 300.0
#: After a failed fetch, known keys stay usable this long past their last fetch.
_MAX_STALE_SECONDS = 24 * 3600.0

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
            Exactly one of ``key`` and ``jwks_url``.
        jwks_url: an identity provider's JWK Set (``https://``, or ``http://`` on
            loopback); the token's ``kid`` picks the key.
        algorithms: accepted ``alg`` values, all from one family. Required.
        audience: expected ``aud``; tokens carrying an ``aud`` are refused without it.
        issuer: expected ``iss``, compared exactly.
        leeway: seconds of clock skew allowed on ``exp``/``nbf``/``iat`` (at most 300).
        require: claims that must be present (``exp`` by default).
        subject_claim: claim used as :attr:`Identity.subject`.
        typ: when set, the header ``typ`` must equal it (RFC 8725 §3.11).
        jwks_timeout, jwks_cooldown, jwks_lifespan: fetch timeout, minimum seconds
            between fetches for unknown ``kid`` values, and key-set cache lifetime.

    Raises:
        ConfigurationError: no algorithms, ``none``, mixed families, short HMAC key,
            both or neither of ``key``/``jwks_url``, a plain-HTTP JWKS URL off loopback.
    """

    def __init__(
        self,
        *,
        key: Any = None,
        jwks_url: str | None = None,
        algorithms: Sequence[str],
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
        require: Sequence[str] = ("exp",),
        subject_claim: str = "sub",
        typ: str | None = None,
        jwks_timeout: float = DEFAULT_JWKS_TIMEOUT,
        jwks_cooldown: float = DEFAULT_JWKS_COOLDOWN,
        jwks_lifespan: float = DEFAULT_JWKS_LIFESPAN,
    ) -> None:
        if (key is None) == (jwks_url is None):
            raise ConfigurationError("give exactly one of key= and jwks_url=")
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
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ConfigurationError(f"leeway must be between 0 and {MAX_LEEWAY:g} seconds")
        self._family = families.pop()
        self._jwks: jwt.PyJWKClient | None = None
        self._stale: dict[str, tuple[float, Any]] = {}
        if jwks_url is not None:
            _check_jwks_url(jwks_url)
            if any(name in _MIN_HMAC_KEY_BYTES for name in algorithms):
                raise ConfigurationError("a JWKS carries public keys: use RS*/PS*/ES*/EdDSA")
            self._jwks = jwt.PyJWKClient(jwks_url, timeout=jwks_timeout,
                                         cooldown_duration=jwks_cooldown,
                                         lifespan=jwks_lifespan)
            self._key: Any = None
        else:
            self._key = _prepare_key(key, algorithms)
        self.algorithms = list(algorithms)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.require = list(require)
        self.subject_claim = subject_claim
        self.typ = typ
        self._jwt = jwt.PyJWT()
        #: Only fetching a JWK Set waits on I/O; a configured key is pure computation.
        self.blocking = jwks_url is not None

    def __call__(self, token: str, /) -> Identity:
        key = self._key if self._jwks is None else self._jwks_key(token)
        try:
            decoded = self._jwt.decode_complete(
                token,
                key=key,
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

    def _jwks_key(self, token: str) -> Any:
        """The key the token's ``kid`` names in the JWK Set, bound to our family."""
        assert self._jwks is not None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.DecodeError:
            raise InvalidToken("malformed") from None
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("missing_kid")
        try:
            jwk = self._jwks.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            fetched, key = self._stale.get(kid, (0.0, None))
            if key is not None and time.monotonic() - fetched < _MAX_STALE_SECONDS:
                return key  # key server down: keep using the last good key
            raise ServiceUnavailable("key_fetch_failed", detail=type(exc).__name__) from None
        except (jwt.PyJWKClientError, jwt.PyJWKSetError):
            raise InvalidToken("unknown_kid") from None
        if not isinstance(jwk.Algorithm, self._family):
            # RFC 8725 §3.1: a key is used only with the family we pinned.
            raise InvalidToken("bad_algorithm")
        self._stale[kid] = (time.monotonic(), jwk.key)
        return jwk.key

    def __repr__(self) -> str:
        return f"JWTVerifier(algorithms={self.algorithms!r}, audience={self.audience!r})"


def _prepare_key(key: Any, algorithms: Sequence[str]) -> Any:
    """Check and parse a configured key once, bound to the algorithms' family."""
    for name in algorithms:
        minimum = _MIN_HMAC_KEY_BYTES.get(name)
        if minimum is None:
            continue
        secret = key.encode() if isinstance(key, str) else key
        if len(secret) < minimum:
            raise ConfigurationError(f"{name} needs a secret of at least {minimum} bytes")
    try:
        # PyJWT refuses PEM public keys as HMAC secrets here.
        return jwt.get_algorithm_by_name(algorithms[0]).prepare_key(key)
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"key does not suit {algorithms[0]}: {exc}") from None


def _check_jwks_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise ConfigurationError("jwks_url must be https:// (http:// only on loopback)")
