"""Socket takeover for eventlet's WSGI server, ``eventlet.wsgi.server``.

eventlet offers the connection (``environ["eventlet.input"].get_socket()``) but writes
``SERVER_PROTOCOL: HTTP/1.0`` into every environ, which the handshake must refuse
(RFC 6455 §4.1 requires HTTP/1.1). This protocol class reports the request's real
version and offers the socket to :class:`~wsauth_sync.wsgi.WebSocketMiddleware`, which
ends the request with eventlet's own "already handled" flag; ``?token=`` values are
redacted from the request line eventlet logs. The process must be
monkey-patched (``eventlet.monkey_patch()`` first). Importing this module needs eventlet.

Usage::

    import eventlet; eventlet.monkey_patch()
    eventlet.wsgi.server(eventlet.listen(("127.0.0.1", 8000)),
                         WebSocketMiddleware(app, ws_app), protocol=EventletProtocol)
"""

from __future__ import annotations

from typing import Any

from eventlet.wsgi import HttpProtocol

from .core.audit import redact_text
from .wsgi import INPUT_KEY, SOCKET_KEY


class EventletProtocol(HttpProtocol):  # type: ignore[misc]
    """An eventlet HTTP protocol that lets the middleware take the socket over."""

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ["SERVER_PROTOCOL"] = self.request_version
        environ[SOCKET_KEY] = environ["eventlet.input"].get_socket()
        environ[INPUT_KEY] = self.rfile
        # eventlet logs the request line, query string included: redact tokens there.
        self.requestline: str = redact_text(str(self.requestline))
        return environ
