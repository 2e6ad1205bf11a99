"""The WSGI shell: authenticated WebSockets inside an existing threaded WSGI server.

:class:`WebSocketMiddleware` wraps any WSGI application. Requests for its WebSocket
paths go through the same core as the socket server: the environ becomes an
:class:`~wsauth_sync.request.UpgradeRequest`, is written back into head bytes and fed
to the very :class:`~wsauth_sync.handshake.ServerHandshake` the threaded server uses,
so statuses, headers and log lines are identical. Refusals are answered the WSGI way
(``start_response``); an accepted request takes over the server's socket, writes the
101 and runs the handler on the WSGI worker thread. Everything else passes through.

Taking over the socket needs the server's cooperation, and each server ends the
request differently afterwards:

* Werkzeug exposes ``environ["werkzeug.socket"]``; raising :class:`ConnectionError`
  then tells it the client is gone, so it writes and logs nothing more.
* gunicorn (``sync`` and ``gthread``) exposes ``environ["gunicorn.socket"]``; raising
  :class:`StopIteration` makes it close the connection without a response or an error.
* cheroot exposes nothing by default: serve through
  :class:`~wsauth_sync.cheroot_gateway.CherootGateway`, which offers the socket as
  ``environ["wsauth_sync.socket"]`` and ends the request cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import audit
from .app import WebSocketApp
from .errors import HandshakeError, NoSocketTakeover, WSAuthError
from .handshake import Rejected, Served, ServerHandshake
from .http11 import rejection_parts
from .request import UNIX_PEER, Address, UpgradeRequest, environ_client, environ_path
from .sources import QueryToken
from .upgrade import answer, decide_parsed, serve_accepted, take_buffered

logger = logging.getLogger("wsauth_sync")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Environ key under which an adapter (e.g. :class:`CherootGateway`) offers the socket.
SOCKET_KEY = "wsauth_sync.socket"
#: Environ key for the adapter's buffered reader (bytes read past the head live there).
INPUT_KEY = "wsauth_sync.input"

SUPPORTED_SERVERS = ("Werkzeug (werkzeug.socket), gunicorn sync/gthread (gunicorn.socket), "
                     "cheroot via wsauth_sync.cheroot_gateway.CherootGateway; for http.server use "
                     "wsauth_sync.handle_request()")


class SocketTakenOver(WSAuthError):
    """Raised to an adapter (:class:`~wsauth_sync.cheroot_gateway.CherootGateway`) once
    the WebSocket on its socket has ended: the request needs no HTTP response."""


class WebSocketMiddleware:
    """Serve ``ws_app``'s WebSocket routes inside the WSGI application ``app``.

    Args:
        app: the wrapped WSGI application; it gets every other request untouched.
        ws_app: routes, authentication policy and limits (shared with the socket server).
        redact_host_logs: attach :class:`~wsauth_sync.audit.RedactTokens` to the
            Werkzeug, gunicorn and cheroot loggers, with the ``param`` of each
            :class:`~wsauth_sync.sources.QueryToken`, so their access logs never show a
            token query parameter. Leave on unless you redact those logs yourself.
    """

    def __init__(self, app: WSGIApp, ws_app: WebSocketApp, *,
                 redact_host_logs: bool = True) -> None:
        self.app = app
        self.ws_app = ws_app
        self._warned_servers: set[str] = set()
        if redact_host_logs:
            audit.install_log_redaction(params=[
                source.param for source in ws_app.policy.sources
                if isinstance(source, QueryToken)])

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ_path(environ) not in self.ws_app.routes:
            return self.app(environ, start_response)
        takeover = _find_socket(environ)
        deadline = time.monotonic() + self.ws_app.handshake_timeout
        client = _peer(environ, takeover)
        handshake = ServerHandshake(self.ws_app.policy, limits=self.ws_app.head_limits,
                                    client=client)
        if takeover is None:
            self._warn_no_takeover(environ)
            return self._refuse(handshake.reject(NoSocketTakeover("no_socket_takeover")),
                                start_response, client)
        try:
            request = UpgradeRequest.from_environ(environ, client=client)
        except HandshakeError as error:
            return self._refuse(handshake.reject(error), start_response, client)
        decision, response, _ = answer(handshake, decide_parsed(handshake, request), deadline,
                                       app=self.ws_app)
        if isinstance(decision, Rejected):
            return self._refuse(decision, start_response, client)
        if isinstance(decision, Served):
            audit.log_served(client=request.client, request=decision.request)
            headers = [(k, v) for k, v in decision.page.headers() if k.lower() != "connection"]
            start_response("200 OK", headers)
            return [decision.page.body]
        key, sock = takeover
        sock.settimeout(None)  # the connection keeps its own deadlines from here on
        with contextlib.suppress(OSError):  # the client left before the 101: nothing to do
            serve_accepted(sock, decision, self.ws_app, response=response,
                           trailing_data=_buffered_bytes(environ, key, sock),
                           address=request.client)
        # Tell the host server the exchange is over, in the way it handles silently.
        if key == "gunicorn.socket":
            raise StopIteration
        if key == "werkzeug.socket":
            raise ConnectionAbortedError("WebSocket connection ended")
        raise SocketTakenOver

    def _refuse(self, rejected: Rejected, start_response: StartResponse,
                client: tuple[str, int] | None) -> list[bytes]:
        error = rejected.error
        audit.log_rejected(client=client, error=error, request=rejected.request)
        headers, body = rejection_parts(error, realm=self.ws_app.policy.realm)
        # PEP 3333 forbids hop-by-hop headers from applications; the server decides
        # about the connection (Werkzeug always closes, gunicorn may keep it alive).
        headers = [(name, value) for name, value in headers if name.lower() != "connection"]
        start_response(f"{error.status} {error.phrase}", headers)
        return [body]

    def _warn_no_takeover(self, environ: Environ) -> None:
        server = str(environ.get("SERVER_SOFTWARE", "unknown WSGI server"))
        if server not in self._warned_servers:
            self._warned_servers.add(server)
            logger.error("WSGI server %r gives no access to its socket, so WebSocket "
                         "upgrades are refused with 501. Supported: %s", server,
                         SUPPORTED_SERVERS)


def _find_socket(environ: Environ) -> tuple[str, socket.socket] | None:
    for key in (SOCKET_KEY, "werkzeug.socket", "gunicorn.socket"):
        sock = environ.get(key)
        if isinstance(sock, socket.socket):
            return key, sock
    return None


def _peer(environ: Environ, takeover: tuple[str, socket.socket] | None) -> Address | None:
    # On a Unix socket the environ has no address ("" or "<local>"): the socket's family
    # says it is the Unix-socket peer, which trusted_proxies=["unix"] can trust.
    client = environ_client(environ)
    if client is None and takeover is not None and takeover[1].family == socket.AF_UNIX:
        return UNIX_PEER
    return client


def _buffered_bytes(environ: Environ, key: str, sock: socket.socket) -> bytes:
    # Werkzeug's wsgi.input and the cheroot adapter's reader buffer the socket; gunicorn
    # keeps its buffer private, so there frames sent before the 101 (which RFC 6455
    # §4.1 tells clients not to do) are lost.
    if key == "gunicorn.socket":
        return b""
    return take_buffered(environ.get(INPUT_KEY if key == SOCKET_KEY else "wsgi.input"), sock)


__all__ = ["SocketTakenOver", "WebSocketMiddleware"]

