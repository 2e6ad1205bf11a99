"""Socket takeover for cheroot (CherryPy's threaded WSGI server).

cheroot's environ carries no socket, but its gateway class is pluggable: this one adds
the socket and its buffered reader to the environ for
:class:`~wsauth_sync.wsgi.WebSocketMiddleware`, and after a WebSocket has ended on the
socket it writes no HTTP response and closes the connection. Importing this module
needs cheroot installed.

Usage::

    server = cheroot.wsgi.Server(("127.0.0.1", 8000), WebSocketMiddleware(app, ws_app))
    server.gateway = CherootGateway
    server.safe_start()
"""

from __future__ import annotations

from typing import Any

from cheroot.wsgi import Gateway_10

from .wsgi import INPUT_KEY, SOCKET_KEY, SocketTakenOver


class CherootGateway(Gateway_10):
    """A WSGI 1.0 gateway for cheroot that lets the middleware take the socket over."""

    def get_environ(self) -> dict[str, Any]:  # type: ignore[override]
        environ: dict[str, Any] = super().get_environ()  # type: ignore[no-untyped-call]
        _drop_underscore_headers(environ, self.req.inheaders)
        environ[SOCKET_KEY] = self.req.conn.socket
        environ[INPUT_KEY] = self.req.conn.rfile
        return environ

    def respond(self) -> None:
        try:
            super().respond()
        except SocketTakenOver:
            # The WebSocket has ended on this socket: write nothing more, close it.
            self.req.sent_headers = True
            self.req.close_connection = True


def _drop_underscore_headers(environ: dict[str, Any], headers: dict[bytes, bytes]) -> None:
    """Remove what headers named with ``_`` wrote into the environ, as Werkzeug and
    gunicorn do.

    cheroot maps ``X_Forwarded_For`` and ``X-Forwarded-For`` to the same key, the later
    one winning: behind a trusted proxy a client could replace the address the proxy
    forwarded, or a second ``Sec_WebSocket_Key`` could replace the real key.
    """
    shadowed = {_environ_key(name) for name in headers if b"_" in name}
    if not shadowed:
        return
    for key in shadowed:
        environ.pop(key, None)
    for name, value in headers.items():
        key = _environ_key(name)
        if b"_" not in name and key in shadowed:
            environ[key] = value.decode("latin-1")


def _environ_key(name: bytes) -> str:
    key = name.decode("latin-1").upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"
