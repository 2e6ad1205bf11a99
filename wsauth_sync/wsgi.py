"""The WSGI shell: authenticated WebSockets inside an existing threaded WSGI server.

:class:`WebSocketMiddleware` wraps any WSGI application. Requests for its WebSocket
paths go through the same core as the socket server: the environ becomes an
:class:`~wsauth_sync.core.request.UpgradeRequest` that the very
:class:`~wsauth_sync.core.handshake.ServerHandshake` the threaded server uses checks as if
it had read it (:meth:`~wsauth_sync.core.handshake.ServerHandshake.receive_request`) and
decides on (:func:`~wsauth_sync.socket_shell.decide`), so statuses, headers and log lines
are identical. Refusals are answered the WSGI way
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
  ``environ["wsauth_sync.socket"]`` and ends the request cleanly. gevent's
  ``pywsgi.WSGIServer`` and ``eventlet.wsgi.server`` take a handler class that does the
  same (:mod:`wsauth_sync.gevent_gateway`, :mod:`wsauth_sync.eventlet_gateway`);
  eventlet's request then ends through its own "already handled" flag.
* uWSGI (``--http-socket``) hands out the connection's descriptor
  (:mod:`wsauth_sync.uwsgi_takeover`): uWSGI itself writes the 101, so it logs the
  request as 101 and writes nothing after it.

Under gevent or eventlet the host's socket is cooperative only once the process is
monkey-patched; an unpatched green socket is refused like a server without a socket.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .config import WebSocketApp
from .core import audit
from .core.errors import HandshakeError, NoSocketTakeover, WSAuthError
from .core.handshake import ClosedRefusal, Rejected, ServerHandshake
from .core.http11 import rejection_parts
from .core.request import UNIX_PEER, Address, UpgradeRequest, environ_client, environ_path
from .core.sources import QueryToken
from .pages import Served
from .socket_shell import decide, send_close_refusal, serve_accepted, take_buffered
from .uwsgi_takeover import UWSGI_KEY, uwsgi_socket, uwsgi_unpatched, write_head

logger = logging.getLogger("wsauth_sync")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Environ key under which an adapter (e.g. :class:`CherootGateway`) offers the socket.
SOCKET_KEY = "wsauth_sync.socket"
#: Environ key for the adapter's buffered reader (bytes read past the head live there).
INPUT_KEY = "wsauth_sync.input"

SUPPORTED_SERVERS = (
    "Werkzeug (werkzeug.socket), gunicorn sync/gthread/gevent "
    "(gunicorn.socket), cheroot via wsauth_sync.cheroot_gateway.CherootGateway, "
    "gevent.pywsgi via wsauth_sync.gevent_gateway.GeventHandler, eventlet.wsgi "
    "via wsauth_sync.eventlet_gateway.EventletProtocol, uWSGI --http-socket "
    "with --threads or --gevent; gevent and eventlet only once monkey-patched; "
    "for http.server use wsauth_sync.handle_request()"
)


class SocketTakenOver(WSAuthError):
    """Raised to an adapter (:class:`~wsauth_sync.cheroot_gateway.CherootGateway`) once
    the WebSocket on its socket has ended: the request needs no HTTP response."""


class WebSocketMiddleware:
    """Serve ``ws_app``'s WebSocket routes inside the WSGI application ``app``.

    Args:
        app: the wrapped WSGI application; it gets every other request untouched.
        ws_app: routes, authentication policy and limits (shared with the socket server).
        redact_host_logs: attach :class:`~wsauth_sync.core.audit.RedactTokens` to the
            Werkzeug, gunicorn and cheroot loggers, with the ``param`` of each
            :class:`~wsauth_sync.core.sources.QueryToken`, so their access logs never show a
            token query parameter. Leave on unless you redact those logs yourself.
    """

    def __init__(
        self, app: WSGIApp, ws_app: WebSocketApp, *, redact_host_logs: bool = True
    ) -> None:
        self.app = app
        self.ws_app = ws_app
        self._warned_servers: set[str] = set()
        if redact_host_logs:
            audit.install_log_redaction(
                params=[
                    source.param
                    for source in ws_app.policy.sources
                    if isinstance(source, QueryToken)
                ]
            )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ_path(environ) not in self.ws_app.routes:
            return self.app(environ, start_response)
        takeover = _find_socket(environ)
        try:
            return self._upgrade(environ, start_response, takeover)
        finally:
            if takeover is not None and takeover[0] == UWSGI_KEY:
                takeover[1].close()  # our duplicate of uWSGI's descriptor; uWSGI closes its own

    def _upgrade(
        self,
        environ: Environ,
        start_response: StartResponse,
        takeover: tuple[str, socket.socket] | None,
    ) -> Iterable[bytes]:
        deadline = time.monotonic() + self.ws_app.handshake_timeout
        client = _peer(environ, takeover)
        handshake = ServerHandshake(
            self.ws_app.policy, limits=self.ws_app.head_limits, client=client
        )
        if takeover is None:
            self._warn_no_takeover(environ)
            return self._refuse(
                handshake.reject(NoSocketTakeover("no_socket_takeover")), start_response, client
            )
        try:
            request = UpgradeRequest.from_environ(environ, client=client)
        except HandshakeError as error:
            return self._refuse(handshake.reject(error), start_response, client)
        head = handshake.receive_request(request)
        decision = decide(handshake, self.ws_app, deadline) if head is True else head
        if isinstance(decision, ClosedRefusal):
            return self._refuse_with_close(decision, start_response, takeover, environ)
        if isinstance(decision, Rejected):
            return self._refuse(decision, start_response, client)
        if isinstance(decision, Served):
            audit.log_served(client=request.client, request=decision.request)
            headers = [(k, v) for k, v in decision.page.headers() if k.lower() != "connection"]
            start_response("200 OK", headers)
            return [decision.page.body]
        key, sock = takeover
        serving = False
        try:
            with contextlib.suppress(OSError):  # the client left before the 101
                if key == UWSGI_KEY:
                    write_head(start_response, decision.response)  # uWSGI writes and logs it
                    decision = replace(decision, response=b"")
                sock.settimeout(None)  # the connection keeps its own deadlines from here on
                trailing = _buffered_bytes(environ, key, sock)
                serving = True  # serve_accepted() releases the caps' slot from here on
                serve_accepted(
                    sock, decision, self.ws_app, trailing_data=trailing, address=request.client
                )
        finally:
            if not serving:  # reserved by decide() for a connection that never opened
                self.ws_app.caps.release(
                    decision.identity.subject, self.ws_app.client_address(decision.request)
                )
        return _end_request(environ, key, sock)

    def _refuse(
        self, rejected: Rejected, start_response: StartResponse, client: tuple[str, int] | None
    ) -> list[bytes]:
        error = rejected.error
        audit.log_rejected(client=client, error=error, request=rejected.request)
        headers, body = rejection_parts(error, realm=self.ws_app.policy.realm)
        # PEP 3333 forbids hop-by-hop headers from applications; the server decides
        # about the connection (Werkzeug always closes, gunicorn may keep it alive).
        headers = [(name, value) for name, value in headers if name.lower() != "connection"]
        start_response(f"{error.status} {error.phrase}", headers)
        return [body]

    def _refuse_with_close(
        self,
        refusal: ClosedRefusal,
        start_response: StartResponse,
        takeover: tuple[str, socket.socket],
        environ: Environ,
    ) -> Iterable[bytes]:
        """A readable refusal: take the socket over to write 101 + Close (no handler)."""
        key, sock = takeover
        audit.log_rejected(
            client=_peer(environ, takeover),
            error=refusal.error,
            request=refusal.request,
            delivered="close",
            code=refusal.code,
        )
        with contextlib.suppress(OSError):  # the client left: nothing more to say
            if key == UWSGI_KEY:
                write_head(start_response, refusal.head)  # uWSGI writes and logs the 101
            send_close_refusal(sock, refusal, head_sent=key == UWSGI_KEY)
        return _end_request(environ, key, sock)

    def _warn_no_takeover(self, environ: Environ) -> None:
        server = str(environ.get("SERVER_SOFTWARE", "unknown WSGI server"))
        if server not in self._warned_servers:
            self._warned_servers.add(server)
            logger.error(
                "WSGI server %r gives no access to its socket%s, so WebSocket "
                "upgrades are refused with 501. Supported: %s",
                server,
                _unpatched_hint(environ),
                SUPPORTED_SERVERS,
            )


def _find_socket(environ: Environ) -> tuple[str, socket.socket] | None:
    # isinstance() against the socket class as it is now: under monkey patching that is
    # gevent's or eventlet's cooperative socket, so an unpatched green socket (which
    # would block the whole hub) is not taken.
    for key in (SOCKET_KEY, "werkzeug.socket", "gunicorn.socket"):
        sock = environ.get(key)
        if isinstance(sock, socket.socket):
            return key, sock
    sock = uwsgi_socket(environ)
    return (UWSGI_KEY, sock) if sock is not None else None


def _end_request(environ: Environ, key: str, sock: socket.socket) -> Iterable[bytes]:
    """Tell the host server the exchange is over, in the way it handles silently."""
    if key == "gunicorn.socket":  # sync, gthread and the async workers alike
        raise StopIteration
    if key == "werkzeug.socket":
        raise ConnectionAbortedError("WebSocket connection ended")
    if key == UWSGI_KEY:
        return []  # the 101 was uWSGI's own response: nothing more to write
    eventlet_wsgi = sys.modules.get("eventlet.wsgi")
    if "eventlet.input" in environ and eventlet_wsgi is not None:
        # eventlet's own flag for a response written by the application itself.
        eventlet_wsgi.WSGI_LOCAL.already_handled = True
        return []
    raise SocketTakenOver


def _unpatched_hint(environ: Environ) -> str:
    """Why a green server's socket was not taken, for the ERROR line."""
    offered = [environ.get(key) for key in (SOCKET_KEY, "gunicorn.socket")]
    if any(
        sock is not None and not isinstance(sock, socket.socket) for sock in offered
    ) or uwsgi_unpatched(environ):
        return (
            " (a gevent or eventlet socket in a process that is not monkey-patched: "
            "call gevent.monkey.patch_all() or eventlet.monkey_patch() first, "
            "uWSGI --gevent-early-monkey-patch)"
        )
    return ""


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
