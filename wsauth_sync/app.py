"""What a deployment serves: routes, the authentication policy, and the limits.

A :class:`WebSocketApp` is plain configuration, checked once. The threaded server,
the low-level :func:`~wsauth_sync.server.handle_socket` and the WSGI middleware all
take one, so the same request gets the same answer whichever shell received it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal

from .connection import DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, WebSocket
from .errors import ConfigurationError
from .guards import FailedAuthLimiter, TimeLimitedVerifier
from .handshake import (
    DEFAULT_MAX_TOKEN_LENGTH,
    DEFAULT_SOURCES,
    FailureLimiter,
    HandshakePolicy,
)
from .http11 import DEFAULT_HEAD_LIMITS, HeadLimits
from .sources import TokenSource
from .verifiers import Verifier

#: A handler gets the accepted WebSocket; the connection closes when it returns.
Handler = Callable[[WebSocket], None]

#: Seconds from TCP accept to a decision: head, token verification, everything.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Seconds a verifier call may take (a database or key server), well inside the above.
DEFAULT_VERIFY_TIMEOUT = 5.0


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
            :class:`~wsauth_sync.handshake.HandshakePolicy`); required with cookies.
        allow_missing_origin: with an allowlist, also accept requests without Origin.
        limiter: failed-authentication budget per client IP (429 beyond it); by default
            a :class:`~wsauth_sync.guards.FailedAuthLimiter` (20 failures, then 1/s);
            None turns it off.
        trusted_proxies: peers whose ``X-Forwarded-For`` is believed (none by default).
        verify_timeout: seconds a verifier call may take before the handshake gets 503
            (capped at ``handshake_timeout``); None runs it inline with no cut-off.

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
    ) -> None:
        if not routes or not all(callable(handler) for handler in routes.values()):
            raise ConfigurationError("routes must map at least one path to a handler")
        if handshake_timeout <= 0 or close_timeout <= 0:
            raise ConfigurationError("timeouts must be positive")
        if max_message_size < 1:
            raise ConfigurationError("max_message_size must be positive")
        if verify_timeout is not None:
            if verify_timeout <= 0:
                raise ConfigurationError("verify_timeout must be positive")
            verifier = TimeLimitedVerifier(
                verifier, timeout=min(verify_timeout, handshake_timeout))
        if limiter == "default":
            limiter = FailedAuthLimiter()
        self.routes = dict(routes)
        self.policy = HandshakePolicy(
            verifier=verifier, paths=self.routes, sources=sources, subprotocols=subprotocols,
            realm=realm, max_token_length=max_token_length, allowed_origins=allowed_origins,
            allow_missing_origin=allow_missing_origin, limiter=limiter,
            trusted_proxies=trusted_proxies)
        self.handshake_timeout = handshake_timeout
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.head_limits = head_limits
