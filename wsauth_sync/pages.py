"""Small static pages served next to a WebSocket path (the echo server's browser demo).

Not part of the handshake: a shell asks :func:`serve_page` first, with the parsed request,
and only a request that is not a plain GET for one of the pages goes on to the core's
decision. The response is framed by the same h11 exchange as every other answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .core.handshake import ServerHandshake
from .core.request import UpgradeRequest


@dataclass(frozen=True)
class Page:
    """A small static resource served for a plain GET (a demo page next to the socket)."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]


@dataclass(frozen=True)
class Served:
    """Outcome: a plain GET for a page; send ``response``, then close."""

    page: Page
    response: bytes
    request: UpgradeRequest


def page_for(pages: Mapping[str, Page], request: UpgradeRequest) -> Page | None:
    """The page a plain GET (no ``Upgrade``) for one of ``pages`` asks for, or None."""
    page = pages.get(request.path)
    if page is None or request.method != "GET" or request.get_all("upgrade"):
        return None
    return page


def serve_page(handshake: ServerHandshake, pages: Mapping[str, Page]) -> Served | None:
    """Serve the page the handshake's request asks for, or None if it asks for none."""
    request = handshake.request
    page = page_for(pages, request) if request is not None and pages else None
    if page is None:
        return None
    assert request is not None
    response = handshake.respond(200, "OK", page.headers(), page.body)
    return Served(page, response, handshake.policy.redact(request))
