"""The WSGI app the green-thread and uWSGI tests serve, and its stand-alone servers.

Three stacked middlewares, each with its own policy, on one port:

* ``/ws``: static tokens (``WSAUTH_TOKENS``), the echo handler, no connection caps
  (one worker holds hundreds of WebSockets);
* ``/jwt``: HS256 JWTs signed with ``WSAUTH_JWT_SECRET``, no leeway: closed with 1008
  when ``exp`` passes;
* ``/keys``: API keys in the SQLite file ``WSAUTH_KEYS_DB``: closed with 1008 once
  revoked.

On ``/jwt`` and ``/keys`` keepalive comes from ``WSAUTH_PING`` (seconds; interval and
timeout alike); ``/ws`` keeps the default 20 s. Every other
path is a plain page. Run directly, the module serves on ``127.0.0.1:$PORT`` with
``gevent`` (``pywsgi.WSGIServer``) or ``eventlet`` (``eventlet.wsgi.server``), after
monkey-patching the process as each requires, before anything else is imported.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:] == ["gevent"]:
    from gevent import monkey

    monkey.patch_all()
elif __name__ == "__main__" and sys.argv[1:] == ["eventlet"]:
    import eventlet

    eventlet.monkey_patch()

import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import Any

from wsauth_sync import BearerToken, JWTVerifier, QueryToken, StaticTokens, WebSocketApp
from wsauth_sync.echo import echo
from wsauth_sync.keystore import open_keystore
from wsauth_sync.wsgi import WebSocketMiddleware

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

PING = float(os.environ.get("WSAUTH_PING", "20"))
SOURCES = [QueryToken(), BearerToken()]
LIMITS: dict[str, Any] = {
    "close_timeout": 2.0,
    "max_connections_per_identity": None,
    "max_connections_per_ip": None,
    "limiter": None,
}
TIMED = {**LIMITS, "ping_interval": PING, "ping_timeout": PING}


def index(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"plain page, pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def build() -> Any:
    app: Any = index
    tokens = [t for t in os.environ.get("WSAUTH_TOKENS", "").split(",") if t]
    if tokens:
        app = WebSocketMiddleware(
            app,
            WebSocketApp({"/ws": echo}, verifier=StaticTokens(tokens), sources=SOURCES, **LIMITS),
        )
    if os.environ.get("WSAUTH_JWT_SECRET"):
        app = WebSocketMiddleware(
            app,
            WebSocketApp(
                {"/jwt": echo},
                sources=SOURCES,
                verifier=JWTVerifier(
                    key=os.environ["WSAUTH_JWT_SECRET"], algorithms=["HS256"], leeway=0
                ),
                **TIMED,
            ),
        )
    if os.environ.get("WSAUTH_KEYS_DB"):
        app = WebSocketMiddleware(
            app,
            WebSocketApp(
                {"/keys": echo},
                sources=SOURCES,
                verifier=open_keystore(os.environ["WSAUTH_KEYS_DB"]),
                revocation_interval=0.5,
                **TIMED,
            ),
        )
    return app


app = application = build()


def _serve(kind: str) -> None:
    port = int(os.environ.get("PORT", "0"))
    if kind == "gevent":
        from gevent.pywsgi import WSGIServer

        from wsauth_sync.gevent_gateway import GeventHandler

        server = WSGIServer(("127.0.0.1", port), app, handler_class=GeventHandler)
        server.start()
        print(f"Listening on http://127.0.0.1:{server.server_port}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: server.stop(timeout=1))
        server.serve_forever()
    else:
        import eventlet.wsgi

        from wsauth_sync.eventlet_gateway import EventletProtocol

        listener = eventlet.listen(("127.0.0.1", port))
        print(f"Listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        eventlet.wsgi.server(
            listener, app, protocol=EventletProtocol, log=logging.getLogger("eventlet.wsgi")
        )


if __name__ == "__main__":
    _serve(sys.argv[1])
