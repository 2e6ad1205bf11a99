"""A plain WSGI app: an HTTP page at ``/`` and the authenticated echo WebSocket at ``/ws``.

Tokens come from the ``WSAUTH_TOKENS`` environment variable (comma-separated), trusted
proxies from ``WSAUTH_TRUSTED_PROXIES`` (comma-separated; ``unix`` for a Unix socket).

    WSAUTH_TOKENS=secret-one,secret-two gunicorn -k gthread --threads 32 \\
        -b 127.0.0.1:8000 examples.wsgi_echo:app
    WSAUTH_TOKENS=secret-one python examples/wsgi_echo.py      # Werkzeug, threaded

``PORT`` changes the Werkzeug server's port. Each open WebSocket holds one server thread:
size ``--threads`` for the connections you expect.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

from wsauth_sync import BearerToken, QueryToken, StaticTokens, SubprotocolToken, WebSocketApp
from wsauth_sync.echo import echo
from wsauth_sync.wsgi import WebSocketMiddleware

# One line per decision from wsauth_sync, next to the server's own log.
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

TOKENS = [
    token.strip() for token in os.environ.get("WSAUTH_TOKENS", "").split(",") if token.strip()
]
if not TOKENS:
    print(
        "examples/wsgi_echo.py: set WSAUTH_TOKENS to one or more comma-separated tokens",
        file=sys.stderr,
    )
    # Under gunicorn, status 3 means "the worker cannot boot": it stops instead of retrying.
    sys.exit(2 if __name__ == "__main__" else 3)
# Proxies whose X-Forwarded-For names the client: IP addresses, or "unix" for nginx in
# front of gunicorn on a Unix socket (--bind unix:/run/app.sock). None by default.
TRUSTED_PROXIES = [
    proxy.strip()
    for proxy in os.environ.get("WSAUTH_TRUSTED_PROXIES", "").split(",")
    if proxy.strip()
]


def index(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The ordinary part of the site: still served by the wrapped application."""
    body = b"<!doctype html><title>wsauth_sync</title><p>Echo WebSocket at /ws</p>\n"
    start_response(
        "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]


app = WebSocketMiddleware(
    index,
    WebSocketApp(
        {"/ws": echo},
        verifier=StaticTokens(TOKENS),
        sources=[QueryToken(), BearerToken(), SubprotocolToken()],
        trusted_proxies=TRUSTED_PROXIES,
    ),
)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), app, threaded=True)
    print(f"Listening on http://127.0.0.1:{server.server_port}", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
