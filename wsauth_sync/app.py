"""What a deployment serves: routes, the authentication policy, and the limits.

A :class:`WebSocketApp` is plain configuration, checked once. The threaded server,
the low-level :func:`~wsauth_sync.server.handle_socket` and the WSGI middleware all
take one, so the same request gets the same answer whichever shell received it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .connection import DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, WebSocket
from .errors import ConfigurationError
from .handshake import DEFAULT_MAX_TOKEN_LENGTH, DEFAULT_SOURCES, HandshakePolicy
from .http11 import DEFAULT_HEAD_LIMITS, HeadLimits
from .sources import TokenSource
from .verifiers import Verifier

#: A handler gets the accepted WebSocket; the connection closes when it returns.
Handler = Callable[[WebSocket], None]

#: Seconds from TCP accept to a decision: head, token verification, everything.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


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
    ) -> None:
        if not routes or not all(callable(handler) for handler in routes.values()):
            raise ConfigurationError("routes must map at least one path to a handler")
        if handshake_timeout <= 0 or close_timeout <= 0:
            raise ConfigurationError("timeouts must be positive")
        if max_message_size < 1:
            raise ConfigurationError("max_message_size must be positive")
        self.routes = dict(routes)
        self.policy = HandshakePolicy(
            verifier=verifier, paths=self.routes, sources=sources, subprotocols=subprotocols,
            realm=realm, max_token_length=max_token_length)
        self.handshake_timeout = handshake_timeout
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.head_limits = head_limits
