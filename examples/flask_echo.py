"""The middleware on a Flask app: ``/`` is a Flask view, ``/ws`` an authenticated echo.

    WSAUTH_TOKENS=secret-one python examples/flask_echo.py

Tokens come from ``WSAUTH_TOKENS`` (comma-separated); ``PORT`` changes the port.
Flask's development server runs threaded (``app.run(threaded=True)``); each open
WebSocket holds one of its threads.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from flask import Flask

from wsauth_sync import QueryToken, StaticTokens, SubprotocolToken, WebSocket, WebSocketApp
from wsauth_sync.wsgi import WebSocketMiddleware

app = Flask(__name__)


@app.route("/")
def index() -> str:
    return "Flask is serving HTTP; the echo WebSocket is at /ws"


def echo(ws: WebSocket) -> None:
    """Greet the client by the subject its token established, then echo."""
    ws.send(f"Welcome, {ws.identity.subject}! You are authenticated.")
    for message in ws:
        ws.send(f"You said: {message}" if isinstance(message, str) else message)


TOKENS = [
    token.strip() for token in os.environ.get("WSAUTH_TOKENS", "").split(",") if token.strip()
]
if not TOKENS:
    print(
        "examples/flask_echo.py: set WSAUTH_TOKENS to one or more comma-separated tokens",
        file=sys.stderr,
    )
    sys.exit(2)
app.wsgi_app = WebSocketMiddleware(
    app.wsgi_app,
    WebSocketApp(  # type: ignore[method-assign]
        {"/ws": echo},
        verifier=StaticTokens({token: f"user-{n}" for n, token in enumerate(TOKENS, 1)}),
        sources=[QueryToken(), SubprotocolToken()],
    ),
)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
