"""HTTP/1.1 for the opening handshake, on h11: bounded parsing and exact responses.

:class:`RequestReader` is sans-I/O: the shell feeds it the bytes it read and gets an
:class:`UpgradeRequest` once the head is complete. h11 does the parsing and bounds the
buffered head; a light scan of line lengths and header count in front of it gives the
precise 414/431 answers h11 does not distinguish, as soon as a limit is crossed, so an
endless header costs no more memory than the limit.

Responses go through the same h11 connection, so they are framed correctly (h11 adds
``Connection: close`` handling and checks that a 101 answers an ``Upgrade`` request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11
from wsproto.utilities import generate_accept_token

from .errors import BadRequest, HandshakeError, HeadersTooLarge, URITooLong
from .request import Address, UpgradeRequest


@dataclass(frozen=True)
class HeadLimits:
    """Bounds on the request head; defaults match the ``websockets`` library and h11.

    Attributes:
        max_head_size: whole head, request line included (431 beyond it).
        max_line_length: request line (414) or one header line (431).
        max_headers: number of header lines (431 beyond it).
    """

    max_head_size: int = 16 * 1024
    max_line_length: int = 8 * 1024
    max_headers: int = 128


DEFAULT_HEAD_LIMITS = HeadLimits()

#: Bytes asked for per read while a head arrives: a whole default head in one read.
HEAD_READ_SIZE = DEFAULT_HEAD_LIMITS.max_head_size

# RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT
_HTTP_VERSION = re.compile(r"[0-9]\.[0-9]")

# Serialized refusals, by everything that shapes their bytes (see RequestReader.reject).
_RESPONSES: dict[tuple[object, ...], bytes] = {}
_MAX_CACHED_RESPONSES = 512


class RequestReader:
    """Parse one opening handshake request from raw bytes, with bounds.

    Args:
        limits: head size bounds.
        client: peer address, recorded on the request.
    """

    def __init__(
        self, *, limits: HeadLimits = DEFAULT_HEAD_LIMITS, client: Address | None = None
    ) -> None:
        self.limits = limits
        self.client = client
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_size)
        self._stand_in = False  # a head parsed elsewhere: h11 reads _ANSWERED_HEAD on demand
        self._request: UpgradeRequest | None = None
        # State of the line scan that runs ahead of h11 until the blank line.
        self._line = bytearray()
        self._lines = 0
        self._head_size = 0
        self._scanning = True

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the head: an eager client's first WebSocket frames."""
        return b"" if self._stand_in else bytes(self._h11.trailing_data[0])

    def receive_data(self, data: bytes) -> UpgradeRequest | None:
        """Feed bytes (``b""`` at end of stream); return the request once complete.

        Raises:
            HandshakeError: 400 malformed or truncated, 414 request line too long,
                431 header line, header count or head too large.
        """
        if self._scanning:
            self._scan(data)
        self._h11.receive_data(data)
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                # h11's message may quote raw bytes (a token, say): keep only the status.
                if not data:
                    raise BadRequest("incomplete_request") from None
                if exc.error_status_hint == 431:
                    raise HeadersTooLarge("head_too_large") from None
                raise BadRequest("malformed_request") from None
            if isinstance(event, h11.Request):
                self._request = UpgradeRequest.from_h11(event, client=self.client)
                if self._request.declares_body:
                    return self._request  # refused by the checks; never read the body
            elif isinstance(event, h11.EndOfMessage):
                return self._request
            elif event is h11.NEED_DATA:
                return None
            else:  # ConnectionClosed before a complete head
                raise BadRequest("incomplete_request")

    def receive_request(self, request: UpgradeRequest) -> UpgradeRequest:
        """Take a head another server parsed (WSGI, ``http.server``) as if read here.

        The same limits and field syntax apply as on the wire (:func:`check_parsed`);
        responses are then framed by h11 as the answer to that request.

        Raises:
            HandshakeError: 400 malformed, 414 or 431 over a limit, as on the wire.
        """
        check_parsed(request, self.limits)
        # Only a 101 or a page needs h11 to have read a request; a refusal's bytes are
        # cached under the state it would have, so refusals skip that parse.
        self._stand_in = True
        self._scanning = False
        self._request = request
        return request

    def _scan(self, data: bytes) -> None:
        """Check head size, line lengths and count as bytes arrive, before h11 buffers them.

        h11 bounds only what it buffers while incomplete; a whole oversized head arriving
        in one read would pass it, so the total is counted here too.
        """
        limits = self.limits
        if not self._lines and not self._line and self._fits_whole(data):
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            chunk = data[start:] if end == -1 else data[start:end]
            self._head_size += len(chunk) + (end != -1)
            if self._head_size > limits.max_head_size:
                raise HeadersTooLarge("head_too_large")
            if len(self._line) + len(chunk) > limits.max_line_length:
                if self._lines == 0:
                    raise URITooLong("request_line_too_long")
                raise HeadersTooLarge("header_line_too_long")
            self._line += chunk
            if end == -1:
                return
            if self._lines > 0 and (self._line == b"" or self._line == b"\r"):
                self._scanning = False  # end of head: what follows is WebSocket data
                return
            if self._lines == 0 and not _looks_like_request_line(bytes(self._line)):
                # Junk (an SMTP greeting, say) would otherwise wait for a blank line
                # that never comes; h11 re-checks the line fully once the head is in.
                raise BadRequest("malformed_request")
            self._lines += 1
            if self._lines > limits.max_headers + 1:
                raise HeadersTooLarge("too_many_headers")
            self._line.clear()
            start = end + 1

    def _fits_whole(self, data: bytes) -> bool:
        """Fast path: a whole, well-formed head in one read, checked with a few C calls.

        Anything unusual (bare LF, a limit crossed, junk) returns False and takes the
        line-by-line path, which names the precise error.
        """
        end = data.find(b"\r\n\r\n")
        if end == -1 or end + 4 > self.limits.max_head_size:
            return False
        head = data[:end]
        if head.count(b"\n") != head.count(b"\r\n"):
            return False
        lines = head.split(b"\r\n")
        if (
            len(lines) > self.limits.max_headers + 1
            or max(map(len, lines)) + 1 > self.limits.max_line_length
            or not _looks_like_request_line(lines[0])
        ):
            return False
        self._scanning = False
        return True

    def _answering(self) -> h11.Connection:
        """The h11 connection that frames our response (reading the stand-in head first)."""
        if self._stand_in:
            self._h11, self._stand_in = _answering_connection(), False
        return self._h11

    def accept(self, *, key: str, subprotocol: str | None) -> bytes:
        """The ``101 Switching Protocols`` response (RFC 6455 §4.2.2 step 5)."""
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", generate_accept_token(key.encode("ascii")).decode("ascii")),
        ]
        if subprotocol is not None:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        event = h11.InformationalResponse(
            status_code=101, headers=headers, reason=b"Switching Protocols"
        )
        return self._answering().send(event) or b""

    def respond(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> bytes:
        """A complete response with ``body``; the connection closes after it."""
        response = h11.Response(status_code=status, headers=headers, reason=reason.encode("ascii"))
        connection = self._answering()
        return b"".join(
            connection.send(event) or b""
            for event in (response, h11.Data(data=body), h11.EndOfMessage())
        )

    def reject(self, error: HandshakeError, *, realm: str = "wsauth") -> bytes:
        """A complete error response: status, required headers, a short generic body.

        Returns ``b""`` when the peer closed before sending anything (nobody to answer).
        """
        headers, body = rejection_parts(error, realm=realm)
        # The bytes depend only on these and on where h11 is in the exchange: refusals
        # repeat (every bad token gets the same 401), so they are serialized once.
        state = (
            _STAND_IN_STATE
            if self._stand_in
            else (self._h11.our_state, self._h11.their_http_version)
        )
        key = (*state, error.status, tuple(headers), body)
        cached = _RESPONSES.get(key)
        if cached is not None:
            return cached
        response = h11.Response(
            status_code=error.status, headers=headers, reason=error.phrase.encode("ascii")
        )
        connection = self._answering()
        try:
            data = b"".join(
                connection.send(event) or b""
                for event in (response, h11.Data(data=body), h11.EndOfMessage())
            )
        except h11.LocalProtocolError:
            data = b""
        if len(_RESPONSES) < _MAX_CACHED_RESPONSES:
            _RESPONSES[key] = data
        return data


def check_parsed(request: UpgradeRequest, limits: HeadLimits = DEFAULT_HEAD_LIMITS) -> None:
    """Apply the wire's checks to a head another server parsed, without re-parsing it.

    h11 validates the fields while building its ``Request`` event (method and header
    name tokens, target and value characters, a Host for HTTP/1.1, framing headers),
    exactly as it does for bytes it parses; the lengths are those the head had on the
    wire (``name: value`` lines), so the limits give the same 414 and 431.

    Raises:
        BadRequest: a field h11 refuses (400 ``malformed_request``).
        URITooLong: request line over ``max_line_length`` (414).
        HeadersTooLarge: a header line, the header count or the head over its limit (431).
    """
    if not _HTTP_VERSION.fullmatch(request.http_version):
        raise BadRequest("malformed_request")
    request_line = len(request.method) + len(request.target) + len(request.http_version) + 7
    if request_line > limits.max_line_length:
        raise URITooLong("request_line_too_long")
    if len(request.headers) > limits.max_headers:
        raise HeadersTooLarge("too_many_headers")
    total = request_line + 2
    for name, value in request.headers:
        line = len(name) + len(value) + 2
        if line + 1 > limits.max_line_length:
            raise HeadersTooLarge("header_line_too_long")
        total += line + 2
    if total > limits.max_head_size:
        raise HeadersTooLarge("head_too_large")
    try:
        h11.Request(
            method=request.method,
            target=request.target,
            headers=list(request.headers),
            http_version=request.http_version,
        )
    except h11.LocalProtocolError:
        raise BadRequest("malformed_request") from None


# h11 frames a response only as the answer to a request it has read. For a head another
# server parsed, it reads this minimal upgrade request instead: the response bytes depend
# only on the request's HTTP version and on whether it asked for an upgrade, and this one
# does both as every request that can get a 101 must.
_ANSWERED_HEAD = (
    b"GET / HTTP/1.1\r\nHost: wsauth\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
)


def _answering_connection() -> h11.Connection:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(_ANSWERED_HEAD)
    while not isinstance(connection.next_event(), h11.EndOfMessage):
        pass
    return connection


# The state a refusal's cache key records for a head parsed elsewhere, as h11 sets it.
_probe = _answering_connection()
_STAND_IN_STATE = (_probe.our_state, _probe.their_http_version)
del _probe


def rejection_parts(
    error: HandshakeError, *, realm: str = "wsauth"
) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body for a refused handshake; shared by the socket and WSGI shells.

    The body names the status only: nothing from the request is echoed.
    """
    body = f"{error.status} {error.phrase}\n".encode("ascii")
    headers = [
        *error.response_headers(realm=realm),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return headers, body


def _looks_like_request_line(line: bytes) -> bool:
    # RFC 9112 §3: method SP request-target SP HTTP-version
    parts = line.rstrip(b"\r").split(b" ")
    return len(parts) == 3 and all(parts) and parts[2].startswith(b"HTTP/")
