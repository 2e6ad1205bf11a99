"""The example handler: greet, then echo (text gets a prefix, binary comes back as is)."""

from __future__ import annotations

from .connection import WebSocket

WELCOME = "Welcome! You are authenticated."


def echo(ws: WebSocket) -> None:
    """Send the welcome, then answer each text ``m`` with ``You said: m``."""
    ws.send(WELCOME)
    for message in ws:
        ws.send(f"You said: {message}" if isinstance(message, str) else message)
