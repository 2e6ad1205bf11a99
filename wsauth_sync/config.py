"""What a deployment serves: routes, the authentication policy, and the limits.

A :class:`WebSocketApp` is plain configuration, checked once. The threaded server,
the low-level :func:`~wsauth_sync.server.handle_socket` and the WSGI middleware all
take one, so the same request gets the same answer whichever shell received it.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal

from .caps import (
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_CONNECTIONS_PER_IDENTITY,
    ConnectionCaps,
)
from .connection import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_FRAGMENTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    WebSocket,
)
from .core.errors import ConfigurationError
from .core.http11 import DEFAULT_HEAD_LIMITS, HeadLimits
from .core.origin import client_ip
from .core.policy import (
    DEFAULT_MAX_TOKEN_LENGTH,
    DEFAULT_SOURCES,
    Accept,
    FailureLimiter,
    HandshakePolicy,
)
from .core.request import UpgradeRequest
from .core.sources import TokenSource
from .core.verifiers import Identity, Verifier
from .guards import FailedAuthLimiter, RevocationWatch, TimeLimitedVerifier
from .pages import Page

#: A handler gets the accepted WebSocket; the connection closes when it returns.
Handler = Callable[[WebSocket], None]

#: Seconds from TCP accept to a decision: head, token verification, everything.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Seconds a verifier call may take (a database or key server), well inside the above.
DEFAULT_VERIFY_TIMEOUT = 5.0
#: Seconds between checks for revoked credentials with open connections.
DEFAULT_REVOCATION_INTERVAL = 5.0


class WebSocketApp:
    """Authenticated WebSocket routes with their limits.

    Args:
        routes: ``{path: handler}``; requests for other paths get 404.
        verifier: turns a token into an :class:`~wsauth_sync.Identity` or refuses it.
        sources: where tokens may travel (default: bearer header and subprotocol).
        subprotocols: application subprotocols the handlers speak, preferred first.
        realm: realm named in ``WWW-Authenticate`` challenges.
        max_token_length: longer tokens are refused before verification.
        handshake_timeout: one absolute deadline for reading the head and verifying.
        max_message_size: bytes per incoming message; more closes with 1009.
        close_timeout: seconds to wait for the peer's Close frame.
        head_limits: request line, header line, header count and head size bounds.
        allowed_origins: exact origins browsers may connect from (see
            :class:`~wsauth_sync.core.handshake.HandshakePolicy`); required with cookies.
        allow_missing_origin: with an allowlist, also accept requests without Origin.
        limiter: failed-authentication budget per client IP (429 beyond it); by default
            a :class:`~wsauth_sync.guards.FailedAuthLimiter` (20 failures, then 1/s);
            None turns it off.
        trusted_proxies: peer IP addresses whose ``X-Forwarded-For`` is believed (none by
            default); ``"unix"`` trusts the peer of a Unix-domain socket.
        verify_timeout: seconds a verifier call may take before the handshake gets 503
            (capped at ``handshake_timeout``); None runs it inline with no cut-off.
            Verifiers marked ``blocking = False`` (static tokens, JWT with a key) never
            wait on I/O and always run inline.
        max_fragments: frames per message (1009 beyond).
        ping_interval, ping_timeout: keepalive: a Ping every ``ping_interval``; a peer
            whose Pong is not back within ``ping_timeout`` is closed with 1011.
            ``ping_interval=None`` disables it.
        send_timeout: seconds a send may wait while the peer takes no data (it stopped
            reading); then TCP is dropped and the handler's send raises
            ``ConnectionClosed`` (1006), freeing its thread.
        idle_timeout: close with 1001 after this long without a message; off by default.
        close_on_expiry: close with 1008 when the credential's ``expires_at`` passes.
        required_scopes: ``{path: scopes}`` a credential must hold there (403 otherwise).
        revocation_interval: seconds between checks for revoked credentials, when the
            verifier can report them (``revoked_after``, e.g. a key store); their open
            connections are closed with 1008. A store that announces revocations
            (PostgreSQL) has them closed at once; the checks are its fallback.
        pages: ``{path: Page}`` served to plain GET requests (a demo page, say).
        max_connections_per_identity: open connections one token subject may hold;
            past it a handshake gets 429 + ``Retry-After`` (None: no cap).
        max_connections_per_ip: open connections one client address may hold (the
            address behind a trusted proxy); 429 past it (None: no cap).
        readable_refusals: paths whose browser refusals a page can read: a request with
            an ``Origin`` refused for its credential (401, 403 for a scope, the limiter's
            429) gets ``101`` and at once a Close 4401/4403/4429 with a fixed reason
            (see :mod:`~wsauth_sync.core.readable`); no handler runs. Off by default.

    Raises:
        ConfigurationError: a missing or unsafe setting.
    """

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        verifier: Verifier,
        sources: Sequence[TokenSource] = DEFAULT_SOURCES,
        subprotocols: Sequence[str] = (),
        realm: str = "wsauth",
        max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        head_limits: HeadLimits = DEFAULT_HEAD_LIMITS,
        allowed_origins: Collection[str] | None = None,
        allow_missing_origin: bool = False,
        limiter: FailureLimiter | Literal["default"] | None = "default",
        trusted_proxies: Collection[str] = (),
        verify_timeout: float | None = DEFAULT_VERIFY_TIMEOUT,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        idle_timeout: float | None = None,
        close_on_expiry: bool = True,
        required_scopes: Mapping[str, Collection[str]] | None = None,
        revocation_interval: float = DEFAULT_REVOCATION_INTERVAL,
        pages: Mapping[str, Page] | None = None,
        max_connections_per_identity: int | None = DEFAULT_MAX_CONNECTIONS_PER_IDENTITY,
        max_connections_per_ip: int | None = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        readable_refusals: Collection[str] = (),
    ) -> None:
        if not routes or not all(callable(handler) for handler in routes.values()):
            raise ConfigurationError("routes must map at least one path to a handler")
        if handshake_timeout <= 0 or close_timeout <= 0:
            raise ConfigurationError("timeouts must be positive")
        if max_message_size < 1 or max_fragments < 1:
            raise ConfigurationError("max_message_size and max_fragments must be positive")
        if any(value is not None and value <= 0
               for value in (ping_interval, ping_timeout, idle_timeout)):
            raise ConfigurationError("ping and idle timeouts must be positive (or None)")
        if not send_timeout > 0:
            raise ConfigurationError("send_timeout must be positive")
        if isinstance(readable_refusals, str) or not set(readable_refusals) <= set(routes):
            raise ConfigurationError("readable_refusals must be a collection of route paths")
        self.verifier = verifier
        self.revocations = (
            RevocationWatch(verifier, interval=revocation_interval)  # type: ignore[arg-type]
            if callable(getattr(verifier, "revoked_after", None)) else None)
        if verify_timeout is not None and verify_timeout <= 0:
            raise ConfigurationError("verify_timeout must be positive")
        if verify_timeout is not None and getattr(verifier, "blocking", True):
            # Only verifiers that may wait on I/O pay for the hop to a time-limited thread.
            verifier = TimeLimitedVerifier(
                verifier, timeout=min(verify_timeout, handshake_timeout))
        if limiter == "default":
            limiter = FailedAuthLimiter()
        self.routes = dict(routes)
        self.policy = HandshakePolicy(
            verifier=verifier, paths=self.routes, sources=sources, subprotocols=subprotocols,
            realm=realm, max_token_length=max_token_length, allowed_origins=allowed_origins,
            allow_missing_origin=allow_missing_origin, limiter=limiter,
            trusted_proxies=trusted_proxies, required_scopes=required_scopes)
        self.pages = dict(pages or {})
        self.readable_refusals = frozenset(readable_refusals)
        self.handshake_timeout = handshake_timeout
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.head_limits = head_limits
        self.max_fragments = max_fragments
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.send_timeout = send_timeout
        self.idle_timeout = idle_timeout
        self.close_on_expiry = close_on_expiry
        self.caps = ConnectionCaps(per_identity=max_connections_per_identity,
                                   per_address=max_connections_per_ip,
                                   exempt_addresses=trusted_proxies)

    def client_address(self, request: UpgradeRequest) -> str:
        """The client's IP for caps: the peer, or the one its proxy names; ``""`` when
        unknown (an address that stands for no one in particular is never capped)."""
        return client_ip(request, self.policy.trusted_proxies) or ""

    def connection(self, sock: socket.socket, accept: Accept, *,
                   trailing_data: bytes = b"") -> WebSocket:
        """The :class:`WebSocket` for an accepted handshake, with this app's limits."""
        return WebSocket(
            sock, accept=accept, trailing_data=trailing_data,
            max_message_size=self.max_message_size, max_fragments=self.max_fragments,
            close_timeout=self.close_timeout, ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout, send_timeout=self.send_timeout,
            idle_timeout=self.idle_timeout, expires_at=accept.identity.expires_at,
            close_on_expiry=self.close_on_expiry,
            reverify=functools.partial(self._reverify, request=accept.request))

    def _reverify(self, token: str, current: Identity, *, request: UpgradeRequest) -> Identity:
        """:meth:`WebSocket.reauthenticate` goes through the handshake's policy."""
        return self.policy.reverify(token, current=current, request=request)
