"""What a deployment serves: routes, the authentication policy, and the limits.

A :class:`WebSocketApp` is plain configuration, checked once. The threaded server,
the low-level :func:`~wsauth_sync.server.handle_socket` and the WSGI middleware all
take one, so the same request gets the same answer whichever shell received it.
"""

from __future__ import annotations

import functools
import math
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

from .caps import (
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_CONNECTIONS_PER_IDENTITY,
    ConnectionCaps,
)
from .connection import WebSocket
from .core.errors import ConfigurationError
from .core.http11 import DEFAULT_HEAD_LIMITS, HeadLimits
from .core.origin import client_ip
from .core.policy import Accept, AuthSettings, FailureLimiter, HandshakePolicy
from .core.request import UpgradeRequest
from .core.verifiers import Identity, Verifier, may_block, revocation_source
from .guards import FailedAuthLimiter, RevocationWatch, TimeLimitedVerifier
from .limits import ConnectionLimits
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
    """Routes with the authentication policy and limits they are served under.

    Configuration, checked once: the threaded server, :func:`handle_socket` and the WSGI
    middleware all take one. Each setting is documented once, in its value object.

    Args:
        routes: ``{path: handler}``; requests for other paths get 404.
        verifier: turns a token into an :class:`~wsauth_sync.Identity` or refuses it.
        auth: where tokens travel and who may present them
            (:class:`~wsauth_sync.core.policy.AuthSettings`).
        limits: what an open connection may cost
            (:class:`~wsauth_sync.limits.ConnectionLimits`).
        head_limits: bounds on the request head (:class:`~wsauth_sync.HeadLimits`).
        handshake_timeout: one absolute deadline from accept to decision: TLS, head and
            verification.
        verify_timeout: seconds a verifier that may wait on I/O gets before the handshake
            gets 503 (capped at ``handshake_timeout``); None runs it inline with no
            cut-off. Verifiers that declare ``blocking = False`` always run inline.
        limiter: failed-authentication budget per client IP (429 beyond it); by default
            a :class:`~wsauth_sync.guards.FailedAuthLimiter` (20 failures, then 1/s);
            None turns it off.
        revocation_interval: seconds between checks for revoked credentials, when the
            verifier reports them (a :class:`~wsauth_sync.core.verifiers.RevocationSource`
            such as a key store); their open connections are closed with 1008.
        pages: ``{path: Page}`` served to plain GET requests (a demo page, say).
        max_connections_per_identity: open connections one token subject may hold;
            past it a handshake gets 429 + ``Retry-After`` (None: no cap).
        max_connections_per_ip: open connections one client address may hold (the
            address behind a trusted proxy); 429 past it (None: no cap).
        readable_refusals: paths whose browser refusals a page can read: a request with
            an ``Origin`` refused for its credential (401, 403 for a scope, the limiter's
            429) gets ``101`` and at once a Close 4401/4403/4429 with a fixed reason
            (see :mod:`~wsauth_sync.core.readable`); no handler runs. Off by default.
        **options: the fields of ``AuthSettings`` and ``ConnectionLimits`` as keywords
            (``sources=``, ``max_message_size=``...: the form of 0.1, kept for one
            release); they replace those of ``auth`` and ``limits``.

    Raises:
        ConfigurationError: a missing or unsafe setting.
        TypeError: an unknown keyword.
    """

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        verifier: Verifier,
        auth: AuthSettings | None = None,
        limits: ConnectionLimits | None = None,
        head_limits: HeadLimits = DEFAULT_HEAD_LIMITS,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        verify_timeout: float | None = DEFAULT_VERIFY_TIMEOUT,
        limiter: FailureLimiter | Literal["default"] | None = "default",
        revocation_interval: float = DEFAULT_REVOCATION_INTERVAL,
        pages: Mapping[str, Page] | None = None,
        max_connections_per_identity: int | None = DEFAULT_MAX_CONNECTIONS_PER_IDENTITY,
        max_connections_per_ip: int | None = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        readable_refusals: Collection[str] = (),
        **options: Any,
    ) -> None:
        unknown = set(options) - _AUTH_FIELDS - _LIMIT_FIELDS
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        if not routes or not all(callable(handler) for handler in routes.values()):
            raise ConfigurationError("routes must map at least one path to a handler")
        if not _positive(handshake_timeout) or (
            verify_timeout is not None and not _positive(verify_timeout)
        ):
            raise ConfigurationError("timeouts must be positive numbers of seconds")
        self.limits = ConnectionLimits.from_options(limits, options)
        auth = AuthSettings.from_options(auth, options)
        if isinstance(readable_refusals, str) or not set(readable_refusals) <= set(routes):
            raise ConfigurationError("readable_refusals must be a collection of route paths")
        self.verifier = verifier
        source = revocation_source(verifier)
        self.revocations = (
            RevocationWatch(source, interval=revocation_interval) if source is not None else None
        )
        if verify_timeout is not None and may_block(verifier):
            # Only verifiers that may wait on I/O pay for the hop to a time-limited thread.
            verifier = TimeLimitedVerifier(verifier, timeout=min(verify_timeout, handshake_timeout))
        if limiter == "default":
            limiter = FailedAuthLimiter()
        self.routes = dict(routes)
        self.policy = HandshakePolicy(
            verifier=verifier, paths=self.routes, auth=auth, limiter=limiter
        )
        self.pages = dict(pages or {})
        self.readable_refusals = frozenset(readable_refusals)
        self.handshake_timeout = handshake_timeout
        self.head_limits = head_limits
        self.close_timeout = self.limits.close_timeout  # read by the server's shutdown
        self.caps = ConnectionCaps(
            per_identity=max_connections_per_identity,
            per_address=max_connections_per_ip,
            exempt_addresses=auth.trusted_proxies,
        )

    def client_address(self, request: UpgradeRequest) -> str:
        """The client's IP for caps: the peer, or the one its proxy names; ``""`` when
        unknown (an address that stands for no one in particular is never capped)."""
        return client_ip(request, self.policy.trusted_proxies) or ""

    def connection(
        self, sock: socket.socket, accept: Accept, *, trailing_data: bytes = b""
    ) -> WebSocket:
        """The :class:`WebSocket` for an accepted handshake, with this app's limits."""
        return WebSocket(
            sock,
            accept=accept,
            trailing_data=trailing_data,
            limits=self.limits,
            expires_at=accept.identity.expires_at,
            reverify=functools.partial(self._reverify, request=accept.request),
        )

    def _reverify(self, token: str, current: Identity, *, request: UpgradeRequest) -> Identity:
        """:meth:`WebSocket.reauthenticate` goes through the handshake's policy."""
        return self.policy.reverify(token, current=current, request=request)


_AUTH_FIELDS = frozenset(AuthSettings.__dataclass_fields__)
_LIMIT_FIELDS = frozenset(ConnectionLimits.__dataclass_fields__)


def _positive(value: float) -> bool:
    # NaN compares false with everything: "not value > 0" catches it, "value <= 0" not.
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0
