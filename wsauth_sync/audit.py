"""One log line per decision: accepted, rejected (with reason code), closed.

Lines go to the ``wsauth_sync`` logger with the same fields under ``extra["wsauth"]``
for structured handlers. They name the peer, path, subject and token source, never a
token, a query string or a credential header.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import HandshakeError
from .request import Address, UpgradeRequest
from .verifiers import Identity

logger = logging.getLogger("wsauth_sync")


def _text(value: object) -> str:
    # Subjects and paths come from clients or token claims: keep one event per line.
    text = str(value)
    return text if text.isprintable() and " " not in text and text else repr(text)


def peer(client: Address | None) -> str:
    """``host:port`` of a client address, ``-`` when unknown."""
    return f"{client[0]}:{client[1]}" if client else "-"


def _emit(level: int, event: str, fields: dict[str, Any]) -> None:
    message = " ".join([event, *(f"{name}={_text(value)}" for name, value in fields.items()
                                 if value is not None)])
    logger.log(level, message, extra={"wsauth": {"event": event, **fields}})


def log_accepted(*, client: Address | None, path: str, identity: Identity,
                 subprotocol: str | None) -> None:
    """Record an accepted handshake."""
    _emit(logging.INFO, "accepted", {
        "peer": peer(client), "path": path, "subject": identity.subject,
        "source": identity.source, "subprotocol": subprotocol})


def log_rejected(*, client: Address | None, error: HandshakeError,
                 request: UpgradeRequest | None) -> None:
    """Record a refused handshake with its status and reason code."""
    level = logging.WARNING if error.status >= 500 else logging.INFO
    _emit(level, "rejected", {
        "peer": peer(client), "status": error.status, "reason": error.reason,
        "path": request.path if request is not None else None,
        "source": error.source, "detail": error.detail})


def log_closed(*, client: Address | None, identity: Identity, code: int,
               duration: float) -> None:
    """Record the end of an accepted connection."""
    _emit(logging.INFO, "closed", {
        "peer": peer(client), "subject": identity.subject, "code": code,
        "duration": f"{duration:.3f}s"})
