"""The echo server in a few lines of library API: run it, then connect with the token.

    python examples/echo_server.py
    python -m websockets "ws://127.0.0.1:8080/ws?token=change-me-to-a-long-random-string"
"""

import logging
import os

from wsauth_sync import QueryToken, StaticTokens, SubprotocolToken, WebSocket, WebSocketApp, serve

TOKEN = os.environ.get("WSAUTH_TOKEN", "change-me-to-a-long-random-string")


def echo(ws: WebSocket) -> None:
    """Greet the authenticated client, then echo what it sends."""
    ws.send(f"Welcome! You are authenticated as {ws.identity.subject}.")
    for message in ws:
        ws.send(f"You said: {message}" if isinstance(message, str) else message)


app = WebSocketApp(
    {"/ws": echo},
    verifier=StaticTokens({TOKEN: "demo-user"}),
    # ?token=... or, from a browser, new WebSocket(url, ["bearer", token])
    sources=[QueryToken(), SubprotocolToken()],
)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print("Listening on ws://127.0.0.1:8080/ws")
    serve(app, host="127.0.0.1", port=8080)
