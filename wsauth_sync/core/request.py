"""The opening handshake request as a frozen value, and its safe (redacted) form.

An :class:`UpgradeRequest` is built from an h11 ``Request`` (threaded server) or from a
WSGI environ (middleware), so everything after parsing sees one shape. Header names are
lowercase and values are ASCII ``str``: non-ASCII bytes are refused while building it,
so no later ``decode`` can raise on hostile input.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus

from .errors import BadRequest

REDACTED = "[REDACTED]"

#: Headers whose values are credentials whatever the token sources are.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

#: Query parameters always redacted from stored targets: the usual names for tokens.
SENSITIVE_QUERY_PARAMS = frozenset(
    {"token", "access_token", "id_token", "api_key", "apikey", "jwt"}
)

Address = tuple[str, int]

#: The peer of a connection on a Unix-domain socket: no address, only the socket file.
#: ``trusted_proxies=["unix"]`` declares it a proxy (nginx in front of gunicorn, say).
UNIX_PEER: Address = ("unix", 0)


def comma_list(values: Iterable[str]) -> list[str]:
    """Split header values that form one comma-separated list (RFC 9110 §5.3).

    Linear time on purpose: a regex with nested quantifiers here was ws's CVE-2021-32640.
    """
    items = []
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if item:
                items.append(item)
    return items


@dataclass(frozen=True)
class UpgradeRequest:
    """A parsed opening handshake.

    Attributes:
        method: ``"GET"`` for any valid handshake.
        target: request target as sent (path and query).
        headers: ``(name, value)`` pairs in arrival order; names lowercase.
        http_version: ``"1.1"`` for any valid handshake.
        client: the peer's address, when the shell knows it.
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    http_version: str = "1.1"
    client: Address | None = None

    @classmethod
    def from_h11(cls, event: Any, *, client: Address | None = None) -> UpgradeRequest:
        """Build from an ``h11.Request``.

        Raises:
            BadRequest: a header value or the target holds non-ASCII bytes (400).
        """
        try:
            headers = tuple(
                (name.decode("ascii"), value.decode("ascii")) for name, value in event.headers
            )
            target = event.target.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("non_ascii_header") from None
        return cls(
            method=event.method.decode("ascii"),
            target=target,
            headers=headers,
            http_version=event.http_version.decode("ascii"),
            client=client,
        )

    @classmethod
    def from_fields(
        cls,
        *,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        http_version: str = "1.1",
        client: Address | None = None,
    ) -> UpgradeRequest:
        """Build from a head another server already parsed (``http.server``, say).

        Raises:
            BadRequest: a value holds non-ASCII characters (400).
        """
        pairs = tuple((name.lower(), value.strip(" \t")) for name, value in headers)
        if not all(text.isascii() for pair in pairs for text in pair) or not target.isascii():
            raise BadRequest("non_ascii_header")
        return cls(
            method=method,
            target=target,
            headers=pairs,
            http_version=http_version.removeprefix("HTTP/"),
            client=client,
        )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, Any], *, client: Address | None = None
    ) -> UpgradeRequest:
        """Build from a WSGI environ (PEP 3333), HTTP version included.

        WSGI servers join repeated headers with ``","`` (or keep only the last): a
        repeated single-value header arrives as one value with a comma, which the checks
        refuse as a duplicate (:meth:`get_unlisted`).

        Args:
            environ: the request's environ.
            client: the peer when the shell knows it better (a Unix socket, say);
                by default :func:`environ_client`.
        """
        headers = [
            (key[5:].replace("_", "-"), value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        for key, name in (("CONTENT_LENGTH", "content-length"), ("CONTENT_TYPE", "content-type")):
            if environ.get(key):
                headers.append((name, environ[key]))
        return cls.from_fields(
            method=environ.get("REQUEST_METHOD", ""),
            target=_environ_target(environ),
            headers=headers,
            http_version=environ.get("SERVER_PROTOCOL", ""),
            client=client or environ_client(environ),
        )

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string (empty when there is none)."""
        return self.target.partition("?")[2]

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of header ``name`` (lowercase), in order."""
        # The checks look headers up a dozen times per request: index them once (a plain
        # memo in __dict__; the value stays frozen and compares by its fields only).
        index: dict[str, tuple[str, ...]] | None = self.__dict__.get("_by_name")
        if index is None:
            grouped: dict[str, list[str]] = {}
            for key, value in self.headers:
                grouped.setdefault(key, []).append(value)
            index = {key: tuple(values) for key, values in grouped.items()}
            object.__setattr__(self, "_by_name", index)
        return index.get(name, ())

    def get_single(self, name: str) -> str | None:
        """The value of a header that may appear at most once.

        Raises:
            BadRequest: the header appears more than once (400, reason ``duplicate_<name>``).
        """
        values = self.get_all(name)
        if len(values) > 1:
            raise BadRequest(f"duplicate_{name}")
        return values[0] if values else None

    def get_unlisted(self, name: str) -> str | None:
        """The value of a single header whose grammar has no comma (Host, say).

        Servers that hand over a parsed head (WSGI, ``http.server``) join repeated
        headers with ``","`` as RFC 9110 §5.3 allows for list headers only; for a header
        that is never a list, a comma is how such a repeat arrives, so it counts as one.

        Raises:
            BadRequest: the header is repeated, as two lines or joined by a comma (400,
                reason ``duplicate_<name>``).
        """
        value = self.get_single(name)
        if value is not None and "," in value:
            raise BadRequest(f"duplicate_{name}")
        return value

    @property
    def declares_body(self) -> bool:
        """True with ``Transfer-Encoding`` or a non-zero ``Content-Length``."""
        return bool(self.get_all("transfer-encoding")) or any(
            value.strip() != "0" for value in self.get_all("content-length")
        )

    @property
    def subprotocols(self) -> list[str]:
        """The offered subprotocols; several headers form one list (RFC 6455 §11.3.4)."""
        return comma_list(self.get_all("sec-websocket-protocol"))

    def replace(self, **changes: Any) -> UpgradeRequest:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def without_subprotocols(self, entries: Iterable[str]) -> UpgradeRequest:
        """A copy whose ``Sec-WebSocket-Protocol`` headers no longer list ``entries``."""
        drop = set(entries)
        headers: list[tuple[str, str]] = []
        for name, value in self.headers:
            if name == "sec-websocket-protocol":
                kept = [entry for entry in comma_list([value]) if entry not in drop]
                if not kept:
                    continue
                value = ", ".join(kept)
            headers.append((name, value))
        return self.replace(headers=tuple(headers))

    def redacted(self, *, query_params: Iterable[str] = ()) -> UpgradeRequest:
        """A copy safe to store and log: credentials replaced by ``[REDACTED]``.

        Covers the credential headers, the usual token query parameters and
        ``query_params``. Token sources add their own redaction on top of this.
        """
        if query_params:
            return self._redact(SENSITIVE_QUERY_PARAMS.union(query_params))
        safe: UpgradeRequest | None = self.__dict__.get("_redacted")
        if safe is None:
            safe = self._redact(SENSITIVE_QUERY_PARAMS)
            object.__setattr__(self, "_redacted", safe)
        return safe

    def _redact(self, names: Iterable[str]) -> UpgradeRequest:
        headers = tuple(
            (name, REDACTED if name in SENSITIVE_HEADERS else value) for name, value in self.headers
        )
        # The constructor, not dataclasses.replace: this runs for every refusal.
        return UpgradeRequest(
            self.method, redact_query(self.target, names), headers, self.http_version, self.client
        )


def _environ_target(environ: Mapping[str, Any]) -> str:
    # The raw target when the server keeps it (gunicorn, Werkzeug: RAW_URI or
    # REQUEST_URI); otherwise rebuilt from the decoded path (latin-1 per PEP 3333).
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    target = quote(path.encode("latin-1"), safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING", "")
    return f"{target}?{query}" if query else target


def environ_client(environ: Mapping[str, Any]) -> Address | None:
    """The peer address of a WSGI environ, or None when it names no IP address.

    PEP 3333 makes ``REMOTE_PORT`` optional (0 then). On a Unix socket servers give
    ``""`` (gunicorn, cheroot) or ``"<local>"`` (Werkzeug): no address, so None, never
    one shared value that would put every client in one failed-authentication bucket.
    """
    address = str(environ.get("REMOTE_ADDR") or "")
    if not _is_ip_address(address):
        return None
    try:
        port = int(environ.get("REMOTE_PORT") or 0)
    except ValueError:
        return None
    return address, port


@functools.lru_cache(maxsize=1024)
def _is_ip_address(text: str) -> bool:
    # A client reconnects from the same address: parse each one once, not per request.
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def environ_path(environ: Mapping[str, Any]) -> str:
    """The decoded request path of a WSGI environ (mount prefix included)."""
    return str(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))


def redact_query(target: str, names: Iterable[str]) -> str:
    """Replace the values of the named query parameters in a request target.

    The query starts at the first ``?``, or at a ``#`` before it: a fragment should
    never reach a server (RFC 9110 §7.1), so one that does is read as query too.
    See :func:`redact_params` for which parameters count.

    Args:
        target: a request target (``/ws?token=...``) or any URL.
        names: parameter names to redact, matched case-insensitively.

    Returns:
        ``target`` with each matching parameter's value replaced by ``[REDACTED]``.
    """
    starts = [index for index in (target.find("?"), target.find("#")) if index >= 0]
    if not starts:
        return target
    cut = min(starts) + 1
    return target[:cut] + redact_params(target[cut:], names)


def redact_params(query: str, names: Iterable[str]) -> str:
    """Replace the values of the named parameters in a bare query string.

    The query is split on ``&`` and on ``;`` (older parsers, and Python's before
    CVE-2021-23336, split there). A parameter is redacted when its percent-decoded,
    lower-cased text assigns one of ``names`` anywhere (``TOKEN=``, ``%74oken=``,
    ``x%26token%3D...``, ``next=/ws%3Ftoken%3D...``): a log should show no token
    whichever parser reads the query later, so this errs towards redacting.

    Returns:
        ``query`` with every other byte kept, separators included.
    """
    wanted = frozenset(name.lower() for name in names)
    if not wanted:
        return query
    assigns = _assignment(wanted)
    pieces = _SEPARATORS.split(query)  # odd items are the separators themselves
    return "".join(
        piece if index % 2 else _redact_param(piece, assigns) for index, piece in enumerate(pieces)
    )


def assigns_param(text: str, names: Iterable[str]) -> bool:
    """True when ``text``, percent-decoded, assigns one of ``names`` (``token=``)."""
    return _assigns(text, _assignment(frozenset(name.lower() for name in names)))


_SEPARATORS = re.compile(r"([&;])")
# Werkzeug and http.server print control characters as \xNN: a %0A before a name
# must not glue onto it ("\x0atoken=").
_PRINTED_ESCAPE = re.compile(r"\\x[0-9a-fA-F]{2}")
# Enough for a double-encoded name; a parameter still changing after that is redacted.
_DECODE_ROUNDS = 4


@functools.lru_cache(maxsize=64)
def _assignment(names: frozenset[str]) -> re.Pattern[str]:
    # A name not glued to a longer word, then "=" (PHP-style "token[]=" included).
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})\s*(?:\[[^\[\]]*\]\s*)*=")


def _assigns(text: str, assigns: re.Pattern[str]) -> bool:
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_plus(text)
        if decoded == text:
            return assigns.search(_PRINTED_ESCAPE.sub(" ", text).lower()) is not None
        text = decoded
    return True  # still percent-encoded after several rounds: hiding something


def _redact_param(param: str, assigns: re.Pattern[str]) -> str:
    if not _assigns(param, assigns):
        return param
    name, eq, _ = param.partition("=")
    # Keep the name for the reader, unless the name itself hides an assignment.
    if eq and not _assigns(name, assigns):
        return f"{name}={REDACTED}"
    return REDACTED
