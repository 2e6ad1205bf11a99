"""The example handler: greet, then echo (text gets a prefix, binary comes back as is).

It also keeps a connection alive past its credential's expiry with a small message
convention (JSON text), which the browser demo speaks:

* before the credential expires (half its remaining life, at most :data:`REAUTH_LEAD`
  seconds before), the server sends ``{"type": "reauth_required", "expires_in": N}``;
* the client answers ``{"type": "reauth", "token": "..."}`` with a fresh token, checked
  by :meth:`~wsauth_sync.WebSocket.reauthenticate`: the server replies
  ``{"type": "reauthenticated", "expires_in": N}``, or closes with 1008 if it is refused.

Any other message, JSON or not, is echoed as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

from .connection import WebSocket
from .core.errors import ConnectionClosed
from .pages import Page

WELCOME = "Welcome! You are authenticated."
#: At most this many seconds before expiry the server asks for a fresh token.
REAUTH_LEAD = 30.0
#: How the demo page can send a token (a browser cannot set an Authorization header).
DEMO_SOURCES = ("subprotocol", "query", "cookie")


def echo(ws: WebSocket) -> None:
    """Send the welcome, then answer each text ``m`` with ``You said: m``; ask for and
    take fresh tokens as the module docstring describes."""
    ws.send(WELCOME)
    ask_at = _ask_at(ws)
    while True:
        left = ws.expires_in
        wait = None if left is None or ask_at is None else max(0.0, left - ask_at)
        try:
            message = ws.recv(timeout=wait)
        except TimeoutError:  # time to ask, once per credential
            ws.send(
                json.dumps(
                    {"type": "reauth_required", "expires_in": max(0, round(ws.expires_in or 0))}
                )
            )
            ask_at = None
            continue
        except ConnectionClosed:
            return
        token = reauth_token(message)
        if token is None:
            ws.send(f"You said: {message}" if isinstance(message, str) else message)
            continue
        ws.reauthenticate(token)  # refused: closed with 1008, ConnectionClosed ends us
        ws.send(
            json.dumps(
                {
                    "type": "reauthenticated",
                    "expires_in": None if ws.expires_in is None else round(ws.expires_in),
                }
            )
        )
        ask_at = _ask_at(ws)


def _ask_at(ws: WebSocket) -> float | None:
    """Seconds-left mark at which to ask for a fresh token (None: never expires)."""
    left = ws.expires_in
    return None if left is None else min(REAUTH_LEAD, max(0.0, left) / 2)


def reauth_token(message: str | bytes) -> str | None:
    """The token of a ``{"type": "reauth", "token": "..."}`` text message, else None."""
    if not isinstance(message, str) or not message.startswith("{"):
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    if (
        isinstance(data, dict)
        and data.get("type") == "reauth"
        and isinstance(data.get("token"), str)
    ):
        return str(data["token"])
    return None


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
