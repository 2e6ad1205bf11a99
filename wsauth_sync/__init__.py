"""Token authentication in front of WebSockets for synchronous, threaded Python servers.

The request is parsed with h11 and authenticated *before* any WebSocket byte flows;
only then does the 101 go out and wsproto take over. Start with :class:`WebSocketApp`
and :class:`WebSocketServer`, or :func:`handle_socket` for an existing accept loop.
"""

__version__ = "0.1.0"

from .app import Handler, WebSocketApp
from .audit import install_log_redaction, redact_message, redact_text
from .connection import WebSocket
from .errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigurationError,
    ConnectionClosed,
    Forbidden,
    HandshakeError,
    InvalidAuthRequest,
    InvalidToken,
    MissingToken,
    NoSocketTakeover,
    ServiceUnavailable,
    TooManyRequests,
    WSAuthError,
)
from .guards import FailedAuthLimiter
from .handshake import Accept, HandshakePolicy, Rejected, ServerHandshake, check_upgrade
from .http11 import HeadLimits
from .jwt_verifier import JWTVerifier
from .keystore import open_keystore
from .request import UpgradeRequest
from .server import WebSocketServer, serve
from .sources import (
    BearerToken,
    CookieToken,
    QueryToken,
    SubprotocolToken,
    TokenSource,
    encode_subprotocol_token,
)
from .upgrade import handle_request, handle_socket, take_buffered
from .verifiers import CallableVerifier, Identity, StaticTokens, Verifier

__all__ = [
    "Accept",
    "AuthenticationFailed",
    "BadRequest",
    "BearerToken",
    "CallableVerifier",
    "ConfigurationError",
    "ConnectionClosed",
    "CookieToken",
    "FailedAuthLimiter",
    "Forbidden",
    "Handler",
    "HandshakeError",
    "HandshakePolicy",
    "HeadLimits",
    "Identity",
    "InvalidAuthRequest",
    "InvalidToken",
    "JWTVerifier",
    "MissingToken",
    "NoSocketTakeover",
    "QueryToken",
    "Rejected",
    "ServerHandshake",
    "ServiceUnavailable",
    "StaticTokens",
    "SubprotocolToken",
    "TokenSource",
    "TooManyRequests",
    "UpgradeRequest",
    "Verifier",
    "WSAuthError",
    "WebSocket",
    "WebSocketApp",
    "WebSocketServer",
    "check_upgrade",
    "encode_subprotocol_token",
    "handle_request",
    "handle_socket",
    "install_log_redaction",
    "open_keystore",
    "redact_message",
    "redact_text",
    "serve",
    "take_buffered",
]
