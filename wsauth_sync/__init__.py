"""Token authentication in front of WebSockets for synchronous, threaded Python servers.

The request is parsed with h11 and authenticated *before* any WebSocket byte flows;
only then does the 101 go out and wsproto take over. Start with :class:`WebSocketApp`
and :class:`WebSocketServer`, or :func:`handle_socket` for an existing accept loop.
"""

__version__ = "0.1.0"

from .config import Handler, WebSocketApp
from .connection import WebSocket
from .core.audit import install_log_redaction, redact_message, redact_text
from .core.errors import (
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
from .core.handshake import Accept, HandshakePolicy, Rejected, ServerHandshake, check_upgrade
from .core.http11 import HeadLimits
from .core.request import UpgradeRequest
from .core.sources import (
    BearerToken,
    CookieToken,
    QueryToken,
    SubprotocolToken,
    TokenSource,
    encode_subprotocol_token,
)
from .core.verifiers import CallableVerifier, Identity, StaticTokens, Verifier
from .guards import FailedAuthLimiter
from .jwt_verifier import JWTVerifier
from .keystore import open_keystore
from .server import WebSocketServer, serve
from .socket_shell import handle_request, handle_socket, take_buffered

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


def _keep_old_module_paths() -> None:
    """Make the module paths of 0.1 (``wsauth_sync.handshake``, ``wsauth_sync.app``...)
    name their new homes, for one release, so existing imports keep working."""
    import sys

    from . import config, socket_shell
    from .core import audit, errors, handshake, http11, origin, request, sources, verifiers

    moved = {"errors": errors, "request": request, "http11": http11, "sources": sources,
             "origin": origin, "handshake": handshake, "verifiers": verifiers, "audit": audit,
             "app": config, "upgrade": socket_shell}
    for old, module in moved.items():
        sys.modules.setdefault(f"{__name__}.{old}", module)
        globals().setdefault(old, module)


_keep_old_module_paths()
