"""The echo server in a few lines of library API: run it, then connect with the token.

    WSAUTH_TOKENS=change-me python examples/echo_server.py
    python -m websockets "ws://127.0.0.1:8080/ws?token=change-me"

Tokens come from ``WSAUTH_TOKENS`` (comma-separated); ``PORT`` changes the port.
"""

import logging
import os
import signal
import sys

from wsauth_sync import (
    QueryToken,
    StaticTokens,
    SubprotocolToken,
    WebSocket,
    WebSocketApp,
    WebSocketServer,
)

TOKENS = [
    token.strip() for token in os.environ.get("WSAUTH_TOKENS", "").split(",") if token.strip()
]


def echo(ws: WebSocket) -> None:
    """Greet the authenticated client, then echo what it sends."""
    ws.send(f"Welcome! You are authenticated as {ws.identity.subject}.")
    for message in ws:
        ws.send(f"You said: {message}" if isinstance(message, str) else message)


if __name__ == "__main__":
    if not TOKENS:
        print(
            "examples/echo_server.py: set WSAUTH_TOKENS to one or more comma-separated tokens",
            file=sys.stderr,
        )
        sys.exit(2)
    app = WebSocketApp(
        {"/ws": echo},
        verifier=StaticTokens({token: "demo-user" for token in TOKENS}),
        # ?token=... or, from a browser, new WebSocket(url, ["bearer", token])
        sources=[QueryToken(), SubprotocolToken()],
    )
    logging.basicConfig(level=logging.INFO)
    server = WebSocketServer(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
    host, port = server.address  # bound: the port is known (PORT=0 picks a free one)
    print(f"Listening on ws://{host}:{port}/ws", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()
