"""JWT verification with PyJWT, with the choices RFC 8725 asks a caller to make.

The algorithms are pinned in configuration and never read from the token (§3.1); one
verifier uses one key with one algorithm family, so an RSA public key can never be
used as an HMAC secret (§3.1, PyJWT CVE-2022-29217). ``exp`` is required by default.
Every PyJWT "bad token" error becomes the same 401; the log names the rule that failed.

Keys come from configuration, or from a JWKS URL fixed in configuration (never from the
token's ``jku``/``x5u``/``jwk`` headers, which are ignored, RFC 8725 §3.10). For a URL,
:class:`JWKSCache` keeps the set: PyJWT fetches and parses it, and what holds is:

* a key is used only while it is in the set of the latest *successful* fetch, so a
  ``kid`` the provider withdrew gets 401 whatever the endpoint does afterwards (errors,
  hangs, refusals, garbage); an empty set or a set of other keys withdraws it too;
* when the key server cannot be reached, the last good set stays usable until it is
  ``jwks_max_stale`` old (one hour by default), then its keys get 503;
* at most one fetch per ``jwks_cooldown``, whatever it gave (keys, error, timeout), and
  one at a time; a login whose key is in the set never waits for another's fetch (the
  one login that finds the set due refreshes it itself, then falls back on the cache);
* a ``kid`` not in the last good set gets 401 if the key server's last answer was a key
  set, and 503 if it was a failure (the key may be new); both count as failed
  authentications (:class:`~wsauth_sync.core.errors.UnverifiableToken` is that 503).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import jwt

from .core.errors import ConfigurationError, InvalidToken, ServiceUnavailable, UnverifiableToken
from .core.verifiers import Identity

#: Clock skew allowed on exp/nbf/iat by default: small, as RFC 8725 §3.9 context suggests.
DEFAULT_LEEWAY = 10.0
#: Largest leeway accepted: beyond a few minutes expiry stops meaning much.
MAX_LEEWAY = 300.0
#: JWKS fetch timeout: well under the 5 s verifier limit and the 10 s handshake deadline.
DEFAULT_JWKS_TIMEOUT = 3.0
#: Minimum seconds between two fetches, whatever the first gave (no amplification).
DEFAULT_JWKS_COOLDOWN = 30.0
#: A key set this old is fetched again on next use (how soon a withdrawal is seen).
DEFAULT_JWKS_LIFESPAN = 300.0
#: While the key server cannot be reached, a key set is used until it is this old: an hour
#: of outage is ridden out, and a key withdrawn meanwhile is trusted at most that long.
DEFAULT_JWKS_MAX_STALE = 3600.0
#: Withdrawn ``kid`` values remembered (to answer 401 without a fetch); older ones are
#: forgotten, which changes nothing but that answer: they are in no set either way.
_MAX_WITHDRAWN = 1024

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
        jwks_timeout: seconds a key-set fetch may wait for the key server to say anything.
        jwks_cooldown: minimum seconds between two fetches, whatever the first one gave.
        jwks_lifespan: a key set this old is fetched again on next use.
        jwks_max_stale: age past which a key set is never used, even while the key server
            cannot be reached (then 503). Needs ``jwks_cooldown <= jwks_lifespan <=
            jwks_max_stale``.

    Raises:
        ConfigurationError: no algorithms, ``none``, mixed families, short HMAC key,
            both or neither of ``key``/``jwks_url``, a plain-HTTP JWKS URL off loopback,
            JWKS timings out of order.
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
        jwks_max_stale: float = DEFAULT_JWKS_MAX_STALE,
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
        self._jwks: JWKSCache | None = None
        if jwks_url is not None:
            _check_jwks_url(jwks_url)
            if any(name in _MIN_HMAC_KEY_BYTES for name in algorithms):
                raise ConfigurationError("a JWKS carries public keys: use RS*/PS*/ES*/EdDSA")
            if not (math.isfinite(jwks_timeout) and jwks_timeout > 0):
                raise ConfigurationError("jwks_timeout must be a positive number of seconds")
            # PyJWT's client fetches (no redirects followed) and parses; we own the cache.
            client = jwt.PyJWKClient(jwks_url, cache_jwk_set=False, timeout=jwks_timeout)
            self._jwks = JWKSCache(
                client.fetch_data,
                cooldown=jwks_cooldown,
                lifespan=jwks_lifespan,
                max_stale=jwks_max_stale,
            )
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
            expires_at=float(exp) + self.leeway if isinstance(exp, (int, float)) else None,
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
        jwk = self._jwks.key(kid)
        if not isinstance(jwk.Algorithm, self._family):
            # RFC 8725 §3.1: a key is used only with the family we pinned.
            raise InvalidToken("bad_algorithm")
        return jwk.key

    def __repr__(self) -> str:
        return f"JWTVerifier(algorithms={self.algorithms!r}, audience={self.audience!r})"


@dataclass(frozen=True)
class _KeySet:
    """What the fetches so far established; replaced whole, never changed in place, so a
    reader holding one reference sees one consistent state without taking a lock."""

    #: Signing keys by ``kid``, as the latest successful fetch returned them.
    keys: Mapping[str, jwt.PyJWK] = field(default_factory=dict)
    #: When the latest successful fetch ended (None: never).
    fetched_at: float | None = None
    #: When the latest fetch attempt ended, whatever it gave (None: never).
    attempted_at: float | None = None
    #: Why that attempt failed (an exception type name), or None if it succeeded.
    failure: str | None = None
    #: ``kid`` values an earlier successful fetch had and a later one did not, oldest first.
    withdrawn: Mapping[str, None] = field(default_factory=dict)


class JWKSCache:
    """The signing keys of one JWK Set URL, as its latest successful fetch published them.

    The set is fetched when a ``kid`` is not in it or it is older than ``lifespan``, but
    never sooner than ``cooldown`` after the previous attempt ended, and by one caller at
    a time: the caller that claims the fetch does it, every other caller answers at once
    from the set it has. While fetches fail the set is used until it is ``max_stale`` old.

    Args:
        fetch: returns the endpoint's JSON document (``PyJWKClient.fetch_data``); any
            exception is a failed fetch.
        cooldown: minimum seconds from the end of one fetch attempt to the next.
        lifespan: seconds after which a set is fetched again on next use.
        max_stale: seconds after which a set is never used.
        clock: monotonic clock, replaceable in tests.

    Raises:
        ConfigurationError: not ``0 <= cooldown <= lifespan <= max_stale`` (finite).
    """

    def __init__(
        self,
        fetch: Callable[[], Any],
        *,
        cooldown: float,
        lifespan: float,
        max_stale: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not all(math.isfinite(value) for value in (cooldown, lifespan, max_stale)):
            raise ConfigurationError("JWKS timings must be finite numbers of seconds")
        if not 0 <= cooldown <= lifespan:
            raise ConfigurationError("jwks_cooldown must be between 0 and jwks_lifespan")
        if not 0 < lifespan <= max_stale:
            raise ConfigurationError("jwks_max_stale must be at least jwks_lifespan (> 0)")
        self._fetch = fetch
        self.cooldown = cooldown
        self.lifespan = lifespan
        self.max_stale = max_stale
        self._clock = clock
        self._state = _KeySet()
        # A one-item list as a try-lock that never blocks: list.pop() and list.append()
        # are atomic (Python FAQ, "What kinds of global value mutation are thread-safe?"),
        # so exactly one caller takes the item and fetches while the others go on.
        self._fetch_slot: list[None] = [None]

    def key(self, kid: str) -> jwt.PyJWK:
        """The key ``kid`` names; fetches the set first when that is due and allowed.

        Raises:
            InvalidToken: 401, ``kid`` is not in the set the key server last answered
                (``unknown_kid``), or was in an earlier one and withdrawn (``withdrawn_kid``).
            UnverifiableToken: 503 counted as a failed authentication: ``kid`` is not in
                the last good set and the key server could not be asked
                (``unknown_kid_unavailable``).
            ServiceUnavailable: 503, ``kid`` is in the last good set but the set is older
                than ``max_stale`` and could not be renewed (``key_fetch_failed``).
        """
        state = self._state
        if self._due(state, kid, self._clock()):
            state = self._try_fetch(kid)
        return self._lookup(state, kid)

    def _due(self, state: _KeySet, kid: str, now: float) -> bool:
        """Whether this lookup should fetch: the set is old or lacks a ``kid`` never seen
        (a withdrawn one forces no fetch), and the cooldown is over."""
        unknown = kid not in state.keys and kid not in state.withdrawn
        old = state.fetched_at is None or now - state.fetched_at >= self.lifespan
        return (unknown or old) and (
            state.attempted_at is None or now - state.attempted_at >= self.cooldown
        )

    def _try_fetch(self, kid: str) -> _KeySet:
        try:
            self._fetch_slot.pop()
        except IndexError:
            return self._state  # another caller is fetching: never wait for it
        try:
            state = self._state
            # Another fetch may have ended between our look and our claim: ask again, so
            # that two fetches never start within one cooldown.
            if self._due(state, kid, self._clock()):
                self._state = state = self._fetched(state)
            return state
        finally:
            self._fetch_slot.append(None)

    def _fetched(self, state: _KeySet) -> _KeySet:
        """The state after one fetch attempt: a new set, or the old one marked failed."""
        try:
            keys = _signing_keys(self._fetch())
        except Exception as exc:  # noqa: BLE001 - any failure leaves the last good set as is
            return replace(state, attempted_at=self._clock(), failure=type(exc).__name__)
        now = self._clock()
        gone = [k for k in (*state.withdrawn, *state.keys) if k not in keys]
        return _KeySet(
            keys=keys,
            fetched_at=now,
            attempted_at=now,
            withdrawn=dict.fromkeys(gone[-_MAX_WITHDRAWN:]),
        )

    def _lookup(self, state: _KeySet, kid: str) -> jwt.PyJWK:
        if kid in state.withdrawn:
            raise InvalidToken("withdrawn_kid")
        jwk = state.keys.get(kid)
        if jwk is not None:
            assert state.fetched_at is not None  # keys only come from a successful fetch
            if self._clock() - state.fetched_at < self.max_stale:
                return jwk
            raise ServiceUnavailable("key_fetch_failed", detail=state.failure)
        if state.fetched_at is not None and state.failure is None:
            raise InvalidToken("unknown_kid")  # the key server's last answer has no such key
        # The key may be new, so not 401; but the client chose this kid: it pays (429).
        raise UnverifiableToken("unknown_kid_unavailable", detail=state.failure)


def _signing_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWK Set document by ``kid``; raises if it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")  # an outage, not a withdrawal
    if not document["keys"]:
        return {}  # RFC 7517 §5 allows an empty set: the provider withdrew every key
    keys: dict[str, jwt.PyJWK] = {}
    # PyJWT skips members it cannot use, and raises if none is left (a broken document).
    for jwk in jwt.PyJWKSet.from_dict(document).keys:
        # RFC 7517 §4.2: signature keys only; a key without kid no token can name.
        if jwk.key_id and jwk.public_key_use in ("sig", None):
            keys.setdefault(jwk.key_id, jwk)  # the first of a repeated kid, as PyJWT does
    return keys


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
