"""The example handler: greet, then echo (text gets a prefix, binary comes back as is)."""

from __future__ import annotations

from importlib import resources

from .connection import WebSocket
from .http11 import Page

WELCOME = "Welcome! You are authenticated."


def echo(ws: WebSocket) -> None:
    """Send the welcome, then answer each text ``m`` with ``You said: m``."""
    ws.send(WELCOME)
    for message in ws:
        ws.send(f"You said: {message}" if isinstance(message, str) else message)


def demo_page(ws_path: str = "/ws") -> Page:
    """The browser demo (connect, send, see the echo or the refusal) for ``ws_path``."""
    html = resources.files(__package__).joinpath("demo.html").read_text("utf-8")
    return Page(html.replace("__WS_PATH__", ws_path).encode("utf-8"))
