"""One log line per decision: accepted, rejected (with reason code), closed.

Lines go to the ``wsauth_sync`` logger with the same fields under ``extra["wsauth"]``
for structured handlers. They name the peer, path, subject and token source, never a
token, a query string or a credential header.

The host servers' own access logs do show query strings: :class:`RedactTokens` parses
their records (request lines, gunicorn's atoms) and redacts token parameters in them.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import HandshakeError
from .request import (
    REDACTED,
    SENSITIVE_QUERY_PARAMS,
    Address,
    UpgradeRequest,
    assigns_param,
    redact_params,
    redact_query,
)
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
    message = " ".join(
        [event, *(f"{name}={_text(value)}" for name, value in fields.items() if value is not None)]
    )
    logger.log(level, message, extra={"wsauth": {"event": event, **fields}})


def _origin(request: UpgradeRequest | None) -> str | None:
    origins = request.get_all("origin") if request is not None else []
    return origins[0] if origins else None


def log_accepted(
    *, client: Address | None, request: UpgradeRequest, identity: Identity, subprotocol: str | None
) -> None:
    """Record an accepted handshake."""
    if not logger.isEnabledFor(logging.INFO):
        return  # not even the fields: one per handshake
    _emit(
        logging.INFO,
        "accepted",
        {
            "peer": peer(client),
            "path": request.path,
            "origin": _origin(request),
            "subject": identity.subject,
            "source": identity.source,
            "subprotocol": subprotocol,
        },
    )


def log_rejected(
    *,
    client: Address | None,
    error: HandshakeError,
    request: UpgradeRequest | None,
    delivered: str | None = None,
    code: int | None = None,
) -> None:
    """Record a refused handshake with its status and reason code.

    Args:
        delivered: ``"close"`` when the refusal went out as 101 + Close ``code`` (a
            readable refusal) instead of the HTTP status; the status is logged either way.
    """
    level = logging.WARNING if error.status >= 500 else logging.INFO
    if not logger.isEnabledFor(level):
        return  # not even the fields: refusals come in floods
    _emit(
        level,
        "rejected",
        {
            "peer": peer(client),
            "status": error.status,
            "reason": error.reason,
            "path": request.path if request is not None else None,
            "origin": _origin(request),
            "source": error.source,
            "detail": error.detail,
            "delivered": delivered,
            "code": code,
        },
    )


def log_served(*, client: Address | None, request: UpgradeRequest) -> None:
    """Record a plain page served instead of a handshake."""
    _emit(logging.INFO, "served", {"peer": peer(client), "path": request.path, "status": 200})


def log_dropped(*, client: Address | None, reason: str) -> None:
    """Record a connection closed without an HTTP answer (TLS failure, no capacity)."""
    _emit(logging.INFO, "dropped", {"peer": peer(client), "reason": reason})


def log_reauthenticated(*, client: Address | None, identity: Identity, path: str) -> None:
    """Record a fresh credential accepted on an open connection."""
    _emit(
        logging.INFO,
        "reauthenticated",
        {
            "peer": peer(client),
            "path": path,
            "subject": identity.subject,
            "expires_at": None if identity.expires_at is None else int(identity.expires_at),
        },
    )


def log_reauthentication_failed(
    *, client: Address | None, subject: str, path: str, error: HandshakeError
) -> None:
    """Record a fresh credential refused on an open connection (which then closes)."""
    level = logging.WARNING if error.status >= 500 else logging.INFO
    if not logger.isEnabledFor(level):
        return  # not even the fields: refusals come in floods
    _emit(
        level,
        "reauthentication_failed",
        {
            "peer": peer(client),
            "path": path,
            "subject": subject,
            "status": error.status,
            "reason": error.reason,
            "detail": error.detail,
        },
    )


def log_handler_failed(*, client: Address | None, identity: Identity) -> None:
    """Record a handler that raised, with its traceback (call from the ``except``)."""
    # The subject passes through _text like every field: a claim with CR/LF in it
    # must not start a forged line of its own.
    logger.exception("handler failed peer=%s subject=%s", peer(client), _text(identity.subject))


def log_closed(*, client: Address | None, identity: Identity, code: int, duration: float) -> None:
    """Record the end of an accepted connection."""
    _emit(
        logging.INFO,
        "closed",
        {
            "peer": peer(client),
            "subject": identity.subject,
            "code": code,
            "duration": f"{duration:.3f}s",
        },
    )


#: Werkzeug colours its request lines with ANSI escapes around the text.
_ANSI = r"(?:\x1b\[[0-9;]*m)*"
#: A request line as hosts log it: ``GET /ws?token=... HTTP/1.1``. http.server and
#: Werkzeug log the lines they refuse too, so the target may hold raw spaces: it runs
#: to the last `` HTTP/`` (or to the end, for HTTP/0.9).
_REQUEST_LINE = re.compile(
    rf"({_ANSI})([A-Za-z]+ )([/*].*?|[A-Za-z][A-Za-z0-9+.-]*://.*?)((?: HTTP/[0-9.]+)?{_ANSI})",
    re.DOTALL,
)
_METHOD_AND_TARGET = re.compile(r"[A-Za-z]+ (?:[/*]|[A-Za-z][A-Za-z0-9+.-]*://)")
_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
_WHITESPACE = re.compile(r"(\s+)")
_PARAM_END = re.compile(r"[&;]")

#: gunicorn access-log atoms (``%(r)s``, ``%(q)s``, ``%({cookie}i)s``...) by what they hold.
_LINE_ATOMS = frozenset({"r"})
_QUERY_ATOMS = frozenset({"q", "{query_string}e"})
_URL_ATOMS = frozenset(
    {"u", "f", "{raw_uri}e", "{request_uri}e", "{path_info}e", "{referer}i", "{http_referer}e"}
)
_SECRET_ATOMS = frozenset(
    {
        "{authorization}i",
        "{proxy-authorization}i",
        "{cookie}i",
        "{sec-websocket-protocol}i",
        "{http_authorization}e",
        "{http_proxy_authorization}e",
        "{http_cookie}e",
        "{http_sec_websocket_protocol}e",
    }
)


def redact_request_line(line: str, names: Iterable[str] = SENSITIVE_QUERY_PARAMS) -> str:
    """Redact the query of a logged request line (``GET /ws?token=... HTTP/1.1``).

    The line is parsed (method, target, version; Werkzeug's colour codes kept) and the
    target redacted with :func:`~wsauth_sync.core.request.redact_query`; anything that is
    not a request line goes through :func:`redact_text` instead.
    """
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        return redact_text(line, names)
    colour, method, target, end = match.groups()
    return f"{colour}{method}{redact_query(target, names)}{end}"


def redact_text(text: str, names: Iterable[str] = SENSITIVE_QUERY_PARAMS) -> str:
    """Redact token parameters wherever they stand in free text (a formatted log line).

    For text with no structure left. In a line holding `` HTTP/``, the query before it
    is redacted as a whole, raw spaces included (a refused request line). Then every
    whitespace-separated run is read as query parameters (see
    :func:`~wsauth_sync.core.request.redact_params`), so ``token=`` is found after a quote,
    a decoded ``%22`` or with no ``?`` at all; a token name whose value a space cut
    off takes the next run with it. Linear in the length of ``text``.
    """
    text = "".join(_redact_line_query(line, names) for line in text.splitlines(keepends=True))
    parts = _WHITESPACE.split(text)  # odd items are the whitespace
    hide_next = False
    for index in range(0, len(parts), 2):
        run = parts[index]
        if hide_next and run:
            parts[index], hide_next = REDACTED, False
            continue
        cut = _closing_start(run)
        body = run[:cut]
        last = _PARAM_END.split(body)[-1]
        hide_next = last.endswith("=") and assigns_param(last, names)
        parts[index] = redact_params(body, names) + run[cut:]
    return "".join(parts)


def _redact_line_query(line: str, names: Iterable[str]) -> str:
    # The last " HTTP/" of a line ends a request line, or the tail of one that a host
    # quotes when it refuses the line (gunicorn: "Invalid HTTP Version: 'x HTTP/1.1'").
    end = line.rfind(" HTTP/")
    if end < 0:
        return line
    starts = [index for index in (line.find("?", 0, end), line.find("#", 0, end)) if index >= 0]
    if starts:
        cut = min(starts) + 1
        return line[:cut] + redact_params(line[cut:end], names) + line[end:]
    start = max(line.rfind("'", 0, end), line.rfind('"', 0, end)) + 1
    if start and end > start and not _METHOD_AND_TARGET.match(line, start, end):
        # Quoted words before the version with no method and target: a raw space split
        # them off a query (".../ws?token= SECRET HTTP/1.1"); nothing tells what they are.
        return line[:start] + REDACTED + line[end:]
    return line


def _closing_start(run: str) -> int:
    # Where the quotes and colour codes that close a field begin: they stay outside a
    # redacted value, so redacting twice gives the same text.
    end = len(run)
    while end:
        if run[end - 1] in "\"')":
            end -= 1
            continue
        escape = run.rfind("\x1b[", 0, end)
        if escape < 0 or not _ANSI_CODE.fullmatch(run, escape, end):
            break
        end = escape
    return end


def redact_args(args: Any, names: Iterable[str] = SENSITIVE_QUERY_PARAMS) -> Any:
    """Redact the arguments of a log record, field by field, before they are formatted.

    A mapping is read as gunicorn's access-log atoms (``r`` request line, ``q`` query,
    ``U`` and ``f`` URLs, credential headers hidden whole); in a tuple a request line
    is parsed as one (Werkzeug, http.server) and other strings are treated as text.
    Other values pass unchanged.
    """
    if isinstance(args, Mapping):
        # A copy of the same type: gunicorn's atoms dict answers "-" for a missing atom.
        safe: dict[Any, Any] = copy.copy(args) if isinstance(args, dict) else dict(args)
        for key, value in args.items():
            if isinstance(value, str):
                safe[key] = _redact_atom(str(key).lower(), value, names)
        return safe
    if isinstance(args, tuple):
        return tuple(
            redact_request_line(arg, names) if isinstance(arg, str) else arg for arg in args
        )
    return args


def _redact_atom(key: str, value: str, names: Iterable[str]) -> str:
    if key in _SECRET_ATOMS:
        return REDACTED if value not in ("", "-") else value
    if key in _LINE_ATOMS:
        return redact_request_line(value, names)
    if key in _QUERY_ATOMS:
        return redact_params(value, names)
    if key in _URL_ATOMS:
        return redact_query(value, names)
    return redact_text(value, names)


def redact_message(
    msg: object, args: Any = (), names: Iterable[str] = SENSITIVE_QUERY_PARAMS
) -> str:
    """Format a log message with every token parameter redacted.

    The arguments are redacted field by field (:func:`redact_args`), the result is
    formatted, and the whole text goes through :func:`redact_text` as a safety net.
    """
    text = str(msg)
    if args:
        text = text % redact_args(args, names)
    return redact_text(text, names)


class RedactTokens(logging.Filter):
    """A logging filter that removes token query parameters from records.

    Host servers log request lines, query string included (Werkzeug's and gunicorn's
    access logs, http.server's); attach this filter to their loggers so a URL token
    never lands there. Each record's arguments are redacted by structure
    (:func:`redact_args`: gunicorn's ``%(r)s``, ``%(q)s``, ``%(U)s`` atoms, Werkzeug's
    request line), then the formatted message by :func:`redact_text`; tracebacks too.

    Args:
        params: query parameter names redacted besides ``SENSITIVE_QUERY_PARAMS``
            (the ``param`` of each :class:`~wsauth_sync.core.sources.QueryToken`).
    """

    def __init__(self, params: Iterable[str] = ()) -> None:
        super().__init__()
        self.params = frozenset(name.lower() for name in SENSITIVE_QUERY_PARAMS.union(params))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = redact_args(record.args, self.params)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - the handler reports the bad format; no token in it
            record.msg = redact_text(str(record.msg), self.params)
            return True
        safe = redact_text(message, self.params)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text, so the traceback is redacted once, here.
            record.exc_text = redact_text(
                logging.Formatter().formatException(record.exc_info), self.params
            )
        return True


#: Loggers of the WSGI servers we embed in that write request lines.
HOST_ACCESS_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error", "cheroot")


def install_log_redaction(*names: str, params: Iterable[str] = ()) -> None:
    """Attach a :class:`RedactTokens` to each named logger (the host servers' by default).

    The filter sits on the logger itself, where the host creates its records, so it
    holds whatever handlers the host adds or replaces later (gunicorn's
    ``--access-logfile``, ``dictConfig``, ``fileConfig``). Installing again keeps the
    parameters added before: two apps with different ``QueryToken`` names both stay
    covered.

    Args:
        names: logger names; the Werkzeug, gunicorn and cheroot ones when empty.
        params: query parameter names to redact besides the usual ones
            (``token``, ``access_token``...).
    """
    for name in names or HOST_ACCESS_LOGGERS:
        target = logging.getLogger(name)
        known = set(params)
        for existing in [f for f in target.filters if isinstance(f, RedactTokens)]:
            known |= existing.params
            target.removeFilter(existing)
        target.addFilter(RedactTokens(known))
