"""The example handler: greet, then echo (text gets a prefix, binary comes back as is)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

from .connection import WebSocket
from .pages import Page

WELCOME = "Welcome! You are authenticated."
#: How the demo page can send a token (a browser cannot set an Authorization header).
DEMO_SOURCES = ("subprotocol", "query", "cookie")


def echo(ws: WebSocket) -> None:
    """Send the welcome, then answer each text ``m`` with ``You said: m``."""
    ws.send(WELCOME)
    for message in ws:
        ws.send(f"You said: {message}" if isinstance(message, str) else message)


def demo_page(ws_path: str = "/ws", *, sources: Sequence[str] = DEMO_SOURCES) -> Page:
    """The browser demo (connect, send, see the echo or the refusal) for ``ws_path``.

    Args:
        ws_path: the WebSocket path the page connects to.
        sources: the ways to send the token that the page offers, first one preselected.
    """
    html = resources.files(__package__).joinpath("demo.html").read_text("utf-8")
    for marker, value in (("__WS_PATH__", ws_path), ("__SOURCES__", list(sources))):
        # JSON is a JS literal; escaping "<" keeps a value from closing the <script>.
        html = html.replace(f'"{marker}"', json.dumps(value).replace("<", "\\u003c"))
    return Page(html.encode("utf-8"))


def empty_icon() -> Page:
    """An empty ``/favicon.ico``, so a browser's automatic request is not a refusal."""
    return Page(b"", content_type="image/x-icon")
