"""Token authentication in front of WebSockets for synchronous, threaded Python servers.

The request is parsed with h11 and authenticated *before* any WebSocket byte flows;
only then does the 101 go out and wsproto take over. Start with :class:`WebSocketApp`
and :class:`WebSocketServer`, or :func:`handle_socket` for an existing accept loop.

Every name the README tells users to use is importable from here. The gateways for
cheroot, gevent and eventlet are imported on first use, so ``import wsauth_sync`` never
imports those servers (gevent must patch the process before anything else imports).
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .config import Handler, WebSocketApp
from .connection import WebSocket
from .core.audit import RedactTokens, install_log_redaction, redact_message, redact_text
from .core.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigurationError,
    ConnectionClosed,
    Forbidden,
    HandshakeError,
    HeadersTooLarge,
    HTTPVersionNotSupported,
    InsufficientScope,
    InvalidAuthRequest,
    InvalidToken,
    MethodNotAllowed,
    MissingToken,
    NoSocketTakeover,
    NotFound,
    RequestTimeout,
    RetryLater,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedVersion,
    UnverifiableToken,
    UpgradeRequired,
    URITooLong,
    WSAuthError,
)
from .core.handshake import Accept, HandshakePolicy, Rejected, ServerHandshake, check_upgrade
from .core.http11 import HeadLimits
from .core.policy import AuthSettings
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
from .guards import FailedAuthLimiter, RevocationWatch
from .jwt_verifier import JWTVerifier
from .keystore import KeyStore, SQLiteKeyStore, open_keystore
from .limits import ConnectionLimits
from .pgstore import PostgresKeyStore
from .server import WebSocketServer, serve
from .socket_shell import handle_request, handle_socket, take_buffered
from .wsgi import WebSocketMiddleware

if TYPE_CHECKING:
    from .cheroot_gateway import CherootGateway as CherootGateway
    from .eventlet_gateway import EventletProtocol as EventletProtocol
    from .gevent_gateway import GeventHandler as GeventHandler

#: Gateways whose module imports an optional server: imported when first named. They
#: stay out of ``__all__``, so ``from wsauth_sync import *`` neither imports gevent into
#: an unpatched process nor fails where cheroot is not installed.
_LAZY = {
    "CherootGateway": "cheroot_gateway",
    "EventletProtocol": "eventlet_gateway",
    "GeventHandler": "gevent_gateway",
}

__all__ = [
    "Accept",
    "AuthSettings",
    "AuthenticationFailed",
    "BadRequest",
    "BearerToken",
    "CallableVerifier",
    "ConfigurationError",
    "ConnectionClosed",
    "ConnectionLimits",
    "CookieToken",
    "FailedAuthLimiter",
    "Forbidden",
    "HTTPVersionNotSupported",
    "Handler",
    "HandshakeError",
    "HandshakePolicy",
    "HeadLimits",
    "HeadersTooLarge",
    "Identity",
    "InsufficientScope",
    "InvalidAuthRequest",
    "InvalidToken",
    "JWTVerifier",
    "KeyStore",
    "MethodNotAllowed",
    "MissingToken",
    "NoSocketTakeover",
    "NotFound",
    "PostgresKeyStore",
    "QueryToken",
    "RedactTokens",
    "Rejected",
    "RequestTimeout",
    "RetryLater",
    "RevocationWatch",
    "SQLiteKeyStore",
    "ServerHandshake",
    "ServiceUnavailable",
    "StaticTokens",
    "SubprotocolToken",
    "TokenSource",
    "TooManyRequests",
    "URITooLong",
    "UnsupportedVersion",
    "UnverifiableToken",
    "UpgradeRequest",
    "UpgradeRequired",
    "Verifier",
    "WSAuthError",
    "WebSocket",
    "WebSocketApp",
    "WebSocketMiddleware",
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


def __getattr__(name: str) -> Any:
    # PEP 562: the optional servers' gateways load when first named, not at import.
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _keep_old_module_paths() -> None:
    """Make the module paths of 0.1 (``wsauth_sync.handshake``, ``wsauth_sync.app``...)
    name their new homes, for one release, so existing imports keep working."""
    import sys

    from . import config, socket_shell
    from .core import audit, errors, handshake, http11, origin, request, sources, verifiers

    moved = {
        "errors": errors,
        "request": request,
        "http11": http11,
        "sources": sources,
        "origin": origin,
        "handshake": handshake,
        "verifiers": verifiers,
        "audit": audit,
        "app": config,
        "upgrade": socket_shell,
    }
    for old, module in moved.items():
        sys.modules.setdefault(f"{__name__}.{old}", module)
        globals().setdefault(old, module)


_keep_old_module_paths()
