"""The authentication policy: one parsed request in, an :class:`Accept` or an error out.

:meth:`HandshakePolicy.decide` runs the checks in a fixed order, cheapest first, so a
malformed or misdirected request never reaches the verifier (which may hit a database or
a key server):

1. the request is a WebSocket opening handshake for a served path (RFC 6455 §4.2.1);
2. its Origin is on the allowlist, when there is one (RFC 6455 §10.2, RFC 6454);
3. the client is not over its failed-authentication budget (429);
4. exactly one token is found in the configured sources (RFC 6750 §2), and the request
   is redacted;
5. a subprotocol is selected from those the client offered, never the token entry
   (RFC 6455 §4.2.2): a handshake a browser would fail for want of one is refused
   here, at no cost;
6. the token passes a size bound, then the verifier;
7. the identity holds every scope the path requires (403).

It returns an :class:`Accept` or raises a :class:`~wsauth_sync.core.errors.HandshakeError`
that already knows its HTTP answer; refusals from step 4 on that count as failed
authentications spend the client's budget. Nothing here does I/O or touches threads.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .checks import check_upgrade
from .errors import (
    BadRequest,
    ConfigurationError,
    HandshakeError,
    InsufficientScope,
    InvalidToken,
    ServiceUnavailable,
)
from .origin import check_origin, client_ip, origin_allowlist, trusted_proxy_set
from .request import UpgradeRequest
from .sources import (
    BearerToken,
    CookieToken,
    QueryToken,
    SubprotocolToken,
    TokenSource,
    find_token,
)
from .verifiers import Identity, Verifier

logger = logging.getLogger("wsauth_sync")

#: Bearer header and subprotocol: the sources that keep tokens out of URLs. Query and
#: cookie tokens are opt-in (URLs are logged; cookies need an Origin allowlist).
DEFAULT_SOURCES: tuple[TokenSource, ...] = (BearerToken(), SubprotocolToken())

#: Longest token handed to a verifier; it fits inside one 8 KiB header line.
DEFAULT_MAX_TOKEN_LENGTH = 8 * 1024


@dataclass(frozen=True)
class Accept:
    """A handshake that may proceed to ``101 Switching Protocols``.

    Attributes:
        request: the request with every credential redacted; safe to store and log.
        identity: what the verifier established, with ``source`` filled in.
        subprotocol: the value for ``Sec-WebSocket-Protocol``, or None for no header.
        key: the client's ``Sec-WebSocket-Key`` (a nonce, not a secret).
        response: the ``101 Switching Protocols`` bytes, filled in by
            :meth:`~wsauth_sync.core.handshake.ServerHandshake.decide` (empty from
            :meth:`HandshakePolicy.decide` alone, which renders nothing).
    """

    request: UpgradeRequest
    identity: Identity
    subprotocol: str | None
    key: str
    response: bytes = b""


class FailureLimiter(Protocol):
    """Budget of failed authentications per client (see :mod:`wsauth_sync.guards`)."""

    def check(self, client: str) -> None:
        """Raise :class:`~wsauth_sync.core.errors.TooManyRequests` when over budget."""

    def failed(self, client: str) -> None:
        """Record one failed authentication."""


@dataclass(frozen=True)
class AuthSettings:
    """Where tokens travel and who may present them: one frozen value, documented here.

    Attributes:
        sources: where tokens may travel, see :mod:`wsauth_sync.core.sources` (default:
            the bearer header and the subprotocol, which keep tokens out of URLs).
        subprotocols: application subprotocols the handlers speak, preferred first.
        realm: the ``realm`` of ``WWW-Authenticate`` challenges.
        max_token_length: longer tokens get 401 without reaching the verifier.
        allowed_origins: exact ``scheme://host[:port]`` values browsers may connect
            from; None means no Origin check (non-browser clients, or tokens that a
            foreign page cannot obtain). Required with a cookie source.
        allow_missing_origin: with an allowlist, also accept requests without Origin
            (non-browser clients); off by default.
        trusted_proxies: peer IP addresses whose ``X-Forwarded-For`` names the client;
            ``"unix"`` trusts the peer of a Unix-domain socket. Without a client
            address the limiter is skipped for that request (logged once).
        required_scopes: ``{path: scopes}`` the credential must all hold (403 otherwise).

    Raises:
        ConfigurationError: no sources, a bad limit, a malformed origin or trusted proxy,
            or a cookie source without an Origin allowlist (cross-site WebSocket hijacking).
    """

    sources: Sequence[TokenSource] = DEFAULT_SOURCES
    subprotocols: Sequence[str] = ()
    realm: str = "wsauth"
    max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH
    allowed_origins: Collection[str] | None = None
    allow_missing_origin: bool = False
    trusted_proxies: Collection[str] = ()
    required_scopes: Mapping[str, Collection[str]] | None = None

    def __post_init__(self) -> None:
        # Stored normalized (tuples, frozensets), so equal settings compare equal.
        fix = object.__setattr__  # frozen: the one place these are written
        fix(self, "sources", tuple(self.sources))
        fix(self, "subprotocols", tuple(self.subprotocols))
        fix(self, "allowed_origins", origin_allowlist(self.allowed_origins))
        fix(self, "trusted_proxies", trusted_proxy_set(self.trusted_proxies))
        fix(
            self,
            "required_scopes",
            {path: frozenset(scopes) for path, scopes in (self.required_scopes or {}).items()},
        )
        if not self.sources:
            raise ConfigurationError("at least one token source is needed")
        if self.max_token_length < 1:
            raise ConfigurationError("max_token_length must be positive")
        if '"' in self.realm or "\\" in self.realm:
            raise ConfigurationError("realm must not contain quotes or backslashes")
        if self.allowed_origins is None and any(isinstance(s, CookieToken) for s in self.sources):
            # Browsers attach cookies to cross-site WebSocket handshakes (OWASP CSWSH).
            raise ConfigurationError("a cookie token source needs allowed_origins")
        if any(
            '"' in scope or "\\" in scope or " " in scope
            for scopes in (self.required_scopes or {}).values()
            for scope in scopes
        ):
            raise ConfigurationError("scopes are single words without quotes")

    @classmethod
    def from_options(cls, base: AuthSettings | None, options: Mapping[str, Any]) -> AuthSettings:
        """``base`` with the fields named in ``options`` replaced (the flat keyword
        arguments of 0.1, still accepted for one release)."""
        wanted = {name: value for name, value in options.items() if name in _AUTH_FIELDS}
        if base is None:
            return cls(**wanted)
        return replace(base, **wanted) if wanted else base


_AUTH_FIELDS = frozenset(AuthSettings.__dataclass_fields__)


class HandshakePolicy:
    """Everything the core needs to decide on a handshake, validated once.

    Args:
        verifier: callable ``token -> Identity`` (see :mod:`wsauth_sync.core.verifiers`).
        paths: request paths that serve WebSockets; others get 404.
        auth: where tokens travel and who may present them (:class:`AuthSettings`).
        limiter: failed-authentication budget per client IP (429 beyond it).
        **options: the fields of :class:`AuthSettings` as keywords (the form of 0.1,
            kept for one release); they replace those of ``auth``.

    Raises:
        ConfigurationError: no paths, or a setting :class:`AuthSettings` refuses.
        TypeError: an unknown keyword.
    """

    def __init__(
        self,
        *,
        verifier: Verifier,
        paths: Collection[str] = ("/ws",),
        auth: AuthSettings | None = None,
        limiter: FailureLimiter | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - _AUTH_FIELDS
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        if not paths or any(not path.startswith("/") for path in paths):
            raise ConfigurationError("paths must be non-empty and start with '/'")
        self.auth = auth = AuthSettings.from_options(auth, options)
        self.verifier = verifier
        self.paths = frozenset(paths)
        self.limiter = limiter
        self._warned_unknown_client = False
        # The settings the checks read, flattened once (the decision path reads them often).
        self.sources: tuple[TokenSource, ...] = tuple(auth.sources)
        self.subprotocols: tuple[str, ...] = tuple(auth.subprotocols)
        self.realm = auth.realm
        self.max_token_length = auth.max_token_length
        self.allowed_origins: frozenset[str] | None = auth.allowed_origins  # type: ignore[assignment]
        self.allow_missing_origin = auth.allow_missing_origin
        self.trusted_proxies: frozenset[str] = auth.trusted_proxies  # type: ignore[assignment]
        self.required_scopes: dict[str, frozenset[str]] = dict(auth.required_scopes or {})  # type: ignore[arg-type]
        # Redaction in one pass over the query: the query sources' parameters join the
        # usual token names; only the other carriers (subprotocol entries) run their own.
        self._query_params = frozenset(
            source.param
            for source in self.sources
            if isinstance(source, QueryToken) and type(source).redact is QueryToken.redact
        )
        self._redacting_sources = tuple(
            source
            for source in self.sources
            if type(source).redact not in (TokenSource.redact, QueryToken.redact)
        )

    def decide(self, request: UpgradeRequest) -> Accept:
        """Decide on one opening handshake.

        Raises:
            HandshakeError: the request is refused; the error carries the response.
        """
        key = check_upgrade(request, paths=self.paths)
        check_origin(request, allowed=self.allowed_origins, allow_missing=self.allow_missing_origin)
        client = client_ip(request, self.trusted_proxies)
        limiter = self._limiter_for(client)
        if limiter is not None and client is not None:
            limiter.check(client)
        try:
            return self._authenticate(request, key)
        except HandshakeError as exc:
            if exc.failed_authentication and limiter is not None and client is not None:
                limiter.failed(client)
            raise

    def redact(self, request: UpgradeRequest) -> UpgradeRequest:
        """``request`` safe to store and log: credential headers, the usual token query
        parameters and every configured source's carrier replaced or removed.

        Every outcome carries this copy, refusals included, so a token in a custom query
        parameter or a subprotocol entry never reaches what a shell stores or logs.
        """
        safe = request.redacted(query_params=self._query_params)
        for source in self._redacting_sources:
            safe = source.redact(safe)
        return safe

    def reverify(self, token: str, *, current: Identity, request: UpgradeRequest) -> Identity:
        """Check a fresh credential for an open connection (re-authentication).

        The handshake's token checks, on a token that came as a message: the client's
        failed-authentication budget, the size bound, the same verifier (and time
        limit), the path's required scopes; and it must name the same subject and, when
        the first had one, the same credential id (revocation is tracked by it).

        Args:
            token: the new credential, as the client sent it.
            current: the connection's identity now.
            request: the connection's (redacted) opening request: path and client.

        Returns:
            The new identity, with the connection's token ``source`` kept.

        Raises:
            HandshakeError: refused; its ``reason`` is for the log. Failures of the
                credential spend the client's budget as in a handshake.
        """
        client = client_ip(request, self.trusted_proxies)
        limiter = self._limiter_for(client)
        if limiter is not None and client is not None:
            limiter.check(client)
        try:
            identity = self._reverify(token, current, request.path)
        except HandshakeError as exc:
            if exc.failed_authentication and limiter is not None and client is not None:
                limiter.failed(client)
            raise
        return replace(identity, source=current.source)

    def _reverify(self, token: str, current: Identity, path: str) -> Identity:
        source = current.source or None
        if not token:
            raise InvalidToken("empty_token", source=source)
        if len(token) > self.max_token_length:
            raise InvalidToken("token_too_long", source=source)
        identity = self._verify(token, current.source)
        if identity.subject != current.subject:
            # A connection belongs to one principal: a token of another is an attack or
            # a bug, never a refresh (its subject is not logged: it may be anyone's).
            raise InvalidToken("subject_changed", source=source)
        if identity.credential_id != current.credential_id:
            raise InvalidToken("credential_changed", source=source)
        needed = self.required_scopes.get(path, frozenset())
        if not needed <= identity.scopes:
            raise InsufficientScope(
                "insufficient_scope",
                scopes=tuple(sorted(needed)),
                source=source,
                detail=identity.subject,
            )
        return identity

    def _limiter_for(self, client: str | None) -> FailureLimiter | None:
        # With no client address (a Unix-socket peer not declared a trusted proxy, say)
        # one shared bucket would let one client's failures lock out everyone with 429:
        # such requests skip the limiter, and the operator is told once how to fix it.
        if client is not None or self.limiter is None:
            return self.limiter
        if not self._warned_unknown_client:
            self._warned_unknown_client = True
            logger.warning(
                "client address unknown (a Unix-socket peer not in "
                "trusted_proxies, or no peer address): the failed-authentication "
                "limiter is skipped for such requests; behind a proxy on a Unix "
                "socket set trusted_proxies=['unix'] and forward X-Forwarded-For"
            )
        return None

    def _authenticate(self, request: UpgradeRequest, key: str) -> Accept:
        found = find_token(request, self.sources)
        name = found.source.name
        # The redacted copy is for the Accept; a refusal builds its own. It is made here
        # only when subprotocols were offered: they are chosen from it, token entries gone.
        safe = self.redact(request) if request.get_all("sec-websocket-protocol") else None
        subprotocol = self._select_subprotocol(
            safe.subprotocols if safe is not None else (),
            found.source.response_subprotocol(request),
        )
        if isinstance(found.source, SubprotocolToken) and subprotocol is None:
            # Browsers fail a handshake that offered subprotocols but selected none.
            raise BadRequest("no_subprotocol_to_select", source=name)
        if not found.value:
            raise InvalidToken("empty_token", source=name)
        if len(found.value) > self.max_token_length:
            raise InvalidToken("token_too_long", source=name)
        identity = self._verify(found.value, name)
        needed = self.required_scopes.get(request.path, frozenset())
        if not needed <= identity.scopes:
            raise InsufficientScope(
                "insufficient_scope",
                scopes=tuple(sorted(needed)),
                source=name,
                detail=identity.subject,
            )
        return Accept(
            request=safe if safe is not None else self.redact(request),
            identity=replace(identity, source=name),
            subprotocol=subprotocol,
            key=key,
        )

    def _select_subprotocol(self, offered: Sequence[str], carrier: str | None) -> str | None:
        # RFC 6455 §4.2.2: at most one value, and only one the client offered; the
        # offered list here has the token entries already removed.
        for protocol in self.subprotocols:
            if protocol in offered:
                return protocol
        return carrier

    def _verify(self, token: str, source: str) -> Identity:
        try:
            identity = self.verifier(token)
        except HandshakeError as exc:
            exc.source = source
            raise
        except (KeyboardInterrupt, SystemExit):
            raise  # the process is stopping: not the client's refusal
        except BaseException as exc:  # noqa: BLE001 - any verifier failure must fail closed
            # BaseException: asyncio's CancelledError and gevent's Timeout are not
            # Exceptions, and escaping would end the thread with no answer, printing the
            # exception's text (which may quote the token): keep only its type.
            raise ServiceUnavailable(
                "verifier_error", source=source, detail=type(exc).__name__
            ) from None
        if not isinstance(identity, Identity):
            raise ServiceUnavailable(
                "verifier_error", source=source, detail=f"returned {type(identity).__name__}"
            )
        return identity
