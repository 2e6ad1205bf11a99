"""The echo WebSocket under cheroot (CherryPy's threaded WSGI server).

cheroot hides its socket from WSGI apps; its pluggable gateway class is the way in.

    WSAUTH_TOKENS=secret-one python examples/cheroot_echo.py

Tokens come from ``WSAUTH_TOKENS`` (comma-separated); ``PORT`` changes the port.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

from cheroot.wsgi import Server

from wsauth_sync import BearerToken, QueryToken, StaticTokens, SubprotocolToken, WebSocketApp
from wsauth_sync.cheroot_gateway import CherootGateway
from wsauth_sync.echo import echo
from wsauth_sync.wsgi import WebSocketMiddleware

TOKENS = [
    token.strip() for token in os.environ.get("WSAUTH_TOKENS", "").split(",") if token.strip()
]


def index(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The ordinary part of the site: still served by the wrapped application."""
    body = b"cheroot is serving HTTP; the echo WebSocket is at /ws\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if __name__ == "__main__":
    if not TOKENS:
        print(
            "examples/cheroot_echo.py: set WSAUTH_TOKENS to one or more comma-separated tokens",
            file=sys.stderr,
        )
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = WebSocketMiddleware(
        index,
        WebSocketApp(
            {"/ws": echo},
            verifier=StaticTokens(TOKENS),
            sources=[QueryToken(), BearerToken(), SubprotocolToken()],
        ),
    )
    server = Server(("127.0.0.1", int(os.environ.get("PORT", "8000"))), app, numthreads=40)
    server.gateway = CherootGateway  # offers the socket to the middleware
    server.prepare()  # binds: the port is known (PORT=0 picks a free one)
    print(f"Listening on http://127.0.0.1:{server.bind_addr[1]}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    try:
        server.serve()
    except KeyboardInterrupt:
        server.stop()
