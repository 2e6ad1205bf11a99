"""One log line per decision: accepted, rejected (with reason code), closed.

Lines go to the ``wsauth_sync`` logger with the same fields under ``extra["wsauth"]``
for structured handlers. They name the peer, path, subject and token source, never a
token, a query string or a credential header.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .errors import HandshakeError
from .request import SENSITIVE_QUERY_PARAMS, Address, UpgradeRequest, redact_query
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
    if not logger.isEnabledFor(level):
        return  # no formatting work for a line nobody will see
    message = " ".join([event, *(f"{name}={_text(value)}" for name, value in fields.items()
                                 if value is not None)])
    logger.log(level, message, extra={"wsauth": {"event": event, **fields}})


def _origin(request: UpgradeRequest | None) -> str | None:
    origins = request.get_all("origin") if request is not None else []
    return origins[0] if origins else None


def log_accepted(*, client: Address | None, request: UpgradeRequest, identity: Identity,
                 subprotocol: str | None) -> None:
    """Record an accepted handshake."""
    _emit(logging.INFO, "accepted", {
        "peer": peer(client), "path": request.path, "origin": _origin(request),
        "subject": identity.subject, "source": identity.source, "subprotocol": subprotocol})


def log_rejected(*, client: Address | None, error: HandshakeError,
                 request: UpgradeRequest | None) -> None:
    """Record a refused handshake with its status and reason code."""
    level = logging.WARNING if error.status >= 500 else logging.INFO
    _emit(level, "rejected", {
        "peer": peer(client), "status": error.status, "reason": error.reason,
        "path": request.path if request is not None else None, "origin": _origin(request),
        "source": error.source, "detail": error.detail})


def log_served(*, client: Address | None, request: UpgradeRequest) -> None:
    """Record a plain page served instead of a handshake."""
    _emit(logging.INFO, "served", {"peer": peer(client), "path": request.path, "status": 200})


def log_dropped(*, client: Address | None, reason: str) -> None:
    """Record a connection closed without an HTTP answer (TLS failure, no capacity)."""
    _emit(logging.INFO, "dropped", {"peer": peer(client), "reason": reason})


def log_closed(*, client: Address | None, identity: Identity, code: int,
               duration: float) -> None:
    """Record the end of an accepted connection."""
    _emit(logging.INFO, "closed", {
        "peer": peer(client), "subject": identity.subject, "code": code,
        "duration": f"{duration:.3f}s"})


def redact_text(text: str, names: Iterable[str] = SENSITIVE_QUERY_PARAMS) -> str:
    """Redact token query parameters from every URL-like run in ``text`` (a log line)."""
    parts = []
    position = 0
    while (mark := text.find("?", position)) != -1:
        end = mark + 1
        while end < len(text) and text[end] not in " \t\"'<>":
            end += 1
        parts += [text[position:mark], redact_query(text[mark:end], names)]
        position = end
    parts.append(text[position:])
    return "".join(parts)


class RedactTokens(logging.Filter):
    """A logging filter that removes ``?token=``-style values from formatted records.

    Host servers log request lines, query string included (Werkzeug's and gunicorn's
    access logs); attach this filter to their loggers so a URL token never lands there.
    """

    def __init__(self, params: Iterable[str] = ()) -> None:
        super().__init__()
        self.params = SENSITIVE_QUERY_PARAMS.union(params)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = redact_text(message, self.params), None
        return True


#: Loggers of the WSGI servers we embed in that write request lines.
HOST_ACCESS_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error", "cheroot")


def install_log_redaction(*names: str, params: Iterable[str] = ()) -> None:
    """Attach a :class:`RedactTokens` to each named logger (the host servers' by default).

    ``params`` adds query parameter names to the usual ones (``token``, ``access_token``...).
    """
    for name in names or HOST_ACCESS_LOGGERS:
        target = logging.getLogger(name)
        for existing in [f for f in target.filters if isinstance(f, RedactTokens)]:
            target.removeFilter(existing)
        target.addFilter(RedactTokens(params))
