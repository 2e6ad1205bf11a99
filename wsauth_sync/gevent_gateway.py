"""Socket takeover for gevent's own WSGI server, ``gevent.pywsgi.WSGIServer``.

pywsgi's environ carries no socket, but its handler class is pluggable: this one offers
the socket and its buffered reader to :class:`~wsauth_sync.wsgi.WebSocketMiddleware`,
and after a WebSocket has ended on the socket it writes no HTTP response and closes the
connection; its access log lines have ``?token=`` values redacted. The process must be
monkey-patched (``gevent.monkey.patch_all()`` before anything else is imported) so the
blocking WebSocket, its locks and the shared timer thread yield to the hub. Importing
this module needs gevent installed.

Usage::

    from gevent import monkey; monkey.patch_all()
    server = gevent.pywsgi.WSGIServer(("127.0.0.1", 8000), WebSocketMiddleware(app, ws_app),
                                      handler_class=GeventHandler)
    server.serve_forever()
"""

from __future__ import annotations

from typing import Any

from gevent.pywsgi import WSGIHandler

from .core.audit import redact_text
from .wsgi import INPUT_KEY, SOCKET_KEY, SocketTakenOver


class GeventHandler(WSGIHandler):  # type: ignore[misc]
    """A pywsgi handler that lets the middleware take the socket over."""

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[SOCKET_KEY] = self.socket
        environ[INPUT_KEY] = self.rfile
        return environ

    def run_application(self) -> None:
        try:
            super().run_application()
        except SocketTakenOver:
            # The WebSocket has ended on this socket: write nothing more, close it. The
            # access log line shows the 101 the middleware sent.
            self.status = self._orig_status = "101 Switching Protocols"
            self.close_connection = True

    def format_request(self) -> str:
        # pywsgi writes the request line, query string included, to its log.
        return redact_text(str(super().format_request()))
