"""Byte-level table for the sans-I/O core: one valid request, mutated per case.

Each case feeds raw bytes to :class:`ServerHandshake` and asserts the exact status line,
the headers a client relies on, the reason code the log will carry, and that the
verifier was never reached when a cheaper check already refused the request.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from helpers import ACCEPT, KEY, SECRET, feed, handshake_bytes, parse_response, secret_forms, split

from wsauth_sync import (
    Accept,
    BearerToken,
    CookieToken,
    HandshakePolicy,
    Identity,
    InvalidToken,
    QueryToken,
    Rejected,
    ServerHandshake,
    SubprotocolToken,
    UpgradeRequest,
    encode_subprotocol_token,
)
from wsauth_sync.core.http11 import HeadLimits


class SpyVerifier:
    """Accepts SECRET as "alice"; counts calls so tests can prove checks ran first."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, token: str) -> Identity:
        self.calls.append(token)
        if token != SECRET:
            raise InvalidToken("unknown_token")
        return Identity(subject="alice")


def decide(
    data: bytes, *, chunk: int | None = None, **policy: object
) -> tuple[Accept | Rejected | None, SpyVerifier, ServerHandshake]:
    spy = SpyVerifier()
    options: dict[str, object] = {
        "sources": (QueryToken(), BearerToken(), SubprotocolToken()),
    }
    options.update(policy)
    handshake = ServerHandshake(HandshakePolicy(verifier=spy, **options))  # type: ignore[arg-type]
    return feed(handshake, split(data, chunk or len(data))), spy, handshake


def rejected(data: bytes, **policy: Any) -> tuple[Rejected, int, dict[str, str], bytes, int]:
    result, spy, _ = decide(data, **policy)
    assert isinstance(result, Rejected), result
    status, headers, body = parse_response(result.response)
    return result, status, headers, body, len(spy.calls)


def valid(target: str = f"/ws?token={SECRET}", extra: str = "", key: str = KEY) -> bytes:
    return handshake_bytes(target, extra=extra, key=key)


def replace_line(name: str, line: str | None, *, target: str = f"/ws?token={SECRET}") -> bytes:
    """The valid request with the header ``name`` replaced by ``line`` (or removed)."""
    lines = valid(target).decode("latin-1").split("\r\n")
    out = []
    for current in lines:
        if current.lower().startswith(name.lower() + ":"):
            if line is not None:
                out.append(line)
        else:
            out.append(current)
    return "\r\n".join(out).encode("latin-1")


# -- the valid request --------------------------------------------------------------------


def test_valid_request_is_accepted_with_the_rfc_accept_value() -> None:
    result, spy, handshake = decide(valid())
    assert isinstance(result, Accept)
    assert result.identity == Identity(subject="alice", source="query")
    assert spy.calls == [SECRET]
    status, headers, _ = parse_response(handshake.accept(result))
    assert status == 101
    assert headers["upgrade"].lower() == "websocket"
    assert headers["connection"].lower() == "upgrade"
    assert headers["sec-websocket-accept"] == ACCEPT
    assert "sec-websocket-protocol" not in headers
    assert "sec-websocket-extensions" not in headers


def test_one_byte_at_a_time_gives_the_same_101() -> None:
    whole, _, h1 = decide(valid())
    dribbled, _, h2 = decide(valid(), chunk=1)
    assert isinstance(whole, Accept) and isinstance(dribbled, Accept)
    assert h1.accept(whole) == h2.accept(dribbled)


def test_accepted_request_keeps_no_token() -> None:
    result, _, _ = decide(valid(extra="Cookie: a=b\r\n"))
    assert isinstance(result, Accept)
    assert SECRET not in repr(result.request)
    assert result.request.query == "token=[REDACTED]"
    assert dict(result.request.headers)["cookie"] == "[REDACTED]"


_CARRIERS = [
    pytest.param(f"/ws?auth={SECRET}", "", "query param auth", id="custom-query-param"),
    pytest.param(f"/ws?AUTH={SECRET}&x=1", "", "query param auth", id="custom-query-param-upper"),
    pytest.param(f"/ws?%61uth={SECRET}", "", "query param auth", id="custom-query-param-encoded"),
    pytest.param(
        "/ws", f"Sec-WebSocket-Protocol: chat, bearer, {SECRET}\r\n", "marker", id="marker"
    ),
    pytest.param(
        "/ws",
        f"Sec-WebSocket-Protocol: chat, {encode_subprotocol_token(SECRET)}\r\n",
        "prefixed",
        id="prefixed",
    ),
    pytest.param(
        "/ws",
        f"Sec-WebSocket-Protocol: {encode_subprotocol_token(SECRET)}, bearer\r\n",
        "prefixed then a marker with nothing after it",
        id="prefixed-then-dangling-marker",
    ),
    pytest.param(
        "/ws",
        f"Sec-WebSocket-Protocol: bearer, {SECRET}\r\nSec-WebSocket-Protocol: bearer, x\r\n",
        "two markers",
        id="two-marker-headers",
    ),
]


@pytest.mark.parametrize("refusal", ["wrong token", "wrong origin", "verifier accepts"])
@pytest.mark.parametrize(("target", "extra", "carrier"), _CARRIERS)
def test_every_outcome_keeps_no_token_in_its_request(
    target: str, extra: str, carrier: str, refusal: str
) -> None:
    """Accepted or refused, the request an outcome carries is the redacted one, for every
    carrier the configured sources read (a custom query parameter, subprotocol entries)."""
    accepted = SECRET if refusal == "verifier accepts" else "another-token-entirely"

    def verifier(token: str) -> Identity:
        if token != accepted:
            raise InvalidToken("unknown_token")
        return Identity(subject="alice")

    data = handshake_bytes(target, extra=extra + "Origin: https://app.example\r\n")
    allowed = ["https://other.example"] if refusal == "wrong origin" else ["https://app.example"]
    handshake = ServerHandshake(
        HandshakePolicy(
            verifier=verifier,
            sources=(QueryToken(param="auth"), SubprotocolToken()),
            subprotocols=["chat"],
            allowed_origins=allowed,
        )
    )
    result = handshake.receive_data(data)
    assert result is not None and result.request is not None, carrier
    for form in secret_forms():
        assert form not in repr(result.request), (carrier, type(result).__name__)
    assert result.request.path == "/ws"


def test_eager_frame_after_the_head_is_kept_as_trailing_data() -> None:
    frame = b"\x81\x82abcd\x09\x0b"
    result, _, handshake = decide(valid() + frame)
    assert isinstance(result, Accept)
    assert handshake.trailing_data == frame


# -- not a valid opening handshake (RFC 6455 §4.2.1 item by item) -------------------------

INVALID = [
    # id, request bytes, status, reason, header that must be present (name, value); the id
    # names what the request breaks: "4.2.1/N" is RFC 6455 §4.2.1 item N.
    (
        "4.2.1/1: POST",
        valid().replace(b"GET", b"POST", 1),
        405,
        "method_not_allowed",
        ("allow", "GET"),
    ),
    (
        "4.2.1/1: HTTP/1.0",
        valid().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        505,
        "http_version_not_supported",
        None,
    ),
    ("4.2.1/2: no Host", replace_line("Host", None), 400, "malformed_request", None),
    ("4.2.1/2: two Hosts", valid(extra="Host: other\r\n"), 400, "malformed_request", None),
    ("served path: unknown path", valid(f"/nope?token={SECRET}"), 404, "unknown_path", None),
    (
        "4.2.1/3: no Upgrade",
        replace_line("Upgrade", None),
        426,
        "not_websocket_upgrade",
        ("upgrade", "websocket"),
    ),
    (
        "4.2.1/3: Upgrade h2c",
        replace_line("Upgrade", "Upgrade: h2c"),
        426,
        "not_websocket_upgrade",
        ("upgrade", "websocket"),
    ),
    (
        "4.2.1/4: keep-alive only",
        replace_line("Connection", "Connection: keep-alive"),
        426,
        "no_connection_upgrade",
        ("upgrade", "websocket"),
    ),
    ("4.2.1/5: no key", replace_line("Sec-WebSocket-Key", None), 400, "missing_key", None),
    (
        "4.2.1/5: two keys",
        valid(extra=f"Sec-WebSocket-Key: {KEY}\r\n"),
        400,
        "duplicate_sec-websocket-key",
        None,
    ),
    ("4.2.1/5: 8-byte key", valid(key="P5l8BJcZwRc="), 400, "bad_key", None),
    ("4.2.1/5: unpadded key", valid(key="dGhlIHNhbXBsZSBub25jZQ"), 400, "bad_key", None),
    ("4.2.1/5: not base64", valid(key="<not Base64 data>"), 400, "bad_key", None),
    (
        "4.2.1/6: no version",
        replace_line("Sec-WebSocket-Version", None),
        400,
        "missing_version",
        None,
    ),
    (
        "4.2.1/6: version 8",
        replace_line("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
        426,
        "unsupported_version",
        ("sec-websocket-version", "13"),
    ),
    (
        "4.2.1/6: two versions",
        valid(extra="Sec-WebSocket-Version: 13\r\n"),
        400,
        "duplicate_version",
        None,
    ),
    (
        "GET has no body: chunked body",
        valid(extra="Transfer-Encoding: chunked\r\n"),
        400,
        "request_body",
        None,
    ),
    (
        "GET has no body: content-length 5",
        valid(extra="Content-Length: 5\r\n"),
        400,
        "request_body",
        None,
    ),
    ("field syntax: bad IDNA host", replace_line("Host", "Host: xn--a"), 400, "bad_host", None),
    (
        "field syntax: non-ASCII protocol",
        valid(extra="Sec-WebSocket-Protocol: tok\xff\r\n"),
        400,
        "non_ascii_header",
        None,
    ),
    (
        "field syntax: non-ASCII connection",
        replace_line("Connection", "Connection: Upgrade\xff"),
        400,
        "non_ascii_header",
        None,
    ),
    (
        "not HTTP: TLS ClientHello",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        400,
        "malformed_request",
        None,
    ),
    ("not HTTP: SMTP", b"HELO relay.invalid\r\n\r\n", 400, "malformed_request", None),
    ("not HTTP: NUL", b"\x00\r\n\r\n", 400, "malformed_request", None),
    (
        "head limit: huge content-length",
        valid(extra="Content-Length: " + "9" * 15000 + "\r\n"),
        431,
        "header_line_too_long",
        None,
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "reason", "header"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_handshake_is_refused_before_the_verifier(
    data: bytes, status: int, reason: str, header: tuple[str, str] | None
) -> None:
    result, got_status, headers, body, calls = rejected(data)
    assert (got_status, result.error.reason) == (status, reason)
    assert calls == 0
    if header is not None:
        assert headers[header[0]] == header[1]
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    assert body.decode().startswith(str(status))
    assert SECRET.encode() not in result.response


def test_426_for_bad_version_also_names_the_upgrade() -> None:
    _, status, headers, _, _ = rejected(
        replace_line("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8")
    )
    assert status == 426
    assert headers["upgrade"] == "websocket"


ACCEPTED_VARIANTS = [
    ("4.2.1/3: Upgrade: WebSocket", replace_line("Upgrade", "Upgrade: WebSocket")),
    (
        "4.2.1/4: Firefox Connection list",
        replace_line("Connection", "Connection: keep-alive, Upgrade"),
    ),
    (
        "4.2.1/4: split Connection headers",
        replace_line("Connection", "Connection: keep-alive\r\nConnection: upgrade"),
    ),
    ("4.2.1/5: WHATWG key with non-zero padding bits", valid(key="AQIDBAUGBwgJCgsMDQ4PEC==")),
    ("GET has no body: Content-Length: 0", valid(extra="Content-Length: 0\r\n")),
    (
        "§9.1 extensions: hostile extension names",
        valid(extra="Sec-WebSocket-Extensions: __class__; __dict__=1, constructor, __proto__\r\n"),
    ),
    (
        "§9.1 extensions: deflate offered",
        valid(extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
    ),
]


@pytest.mark.parametrize(
    "data", [case[1] for case in ACCEPTED_VARIANTS], ids=[case[0] for case in ACCEPTED_VARIANTS]
)
def test_tolerated_variants_are_accepted_without_extensions(data: bytes) -> None:
    result, _, handshake = decide(data)
    assert isinstance(result, Accept), result
    status, headers, _ = parse_response(handshake.accept(result))
    assert status == 101
    assert "sec-websocket-extensions" not in headers


def test_key_surrounded_by_whitespace_is_used_trimmed() -> None:
    result, _, handshake = decide(
        replace_line("Sec-WebSocket-Key", f"Sec-WebSocket-Key:   {KEY}  ")
    )
    assert isinstance(result, Accept)
    assert parse_response(handshake.accept(result))[1]["sec-websocket-accept"] == ACCEPT


# -- limits on the head -------------------------------------------------------------------


def test_request_line_over_8_kib_is_414() -> None:
    result, status, _, _, calls = rejected(valid("/ws?x=" + "a" * 8200))
    assert (status, result.error.reason, calls) == (414, "request_line_too_long", 0)


def test_header_line_over_8_kib_is_431() -> None:
    result, status, _, _, _ = rejected(valid(extra="X-Big: " + "a" * 8200 + "\r\n"))
    assert (status, result.error.reason) == (431, "header_line_too_long")


def test_more_than_128_headers_is_431() -> None:
    extra = "".join(f"X-H{i}: v\r\n" for i in range(129))
    result, status, _, _, _ = rejected(valid(extra=extra))
    assert (status, result.error.reason) == (431, "too_many_headers")


def test_head_over_16_kib_is_431() -> None:
    extra = "".join(f"X-H{i}: {'v' * 4000}\r\n" for i in range(5))
    result, status, _, _, _ = rejected(valid(extra=extra))
    assert (status, result.error.reason) == (431, "head_too_large")


def test_limits_are_configurable() -> None:
    spy = SpyVerifier()
    handshake = ServerHandshake(
        HandshakePolicy(verifier=spy, sources=(QueryToken(),)), limits=HeadLimits(max_headers=3)
    )
    result = handshake.receive_data(valid())
    assert isinstance(result, Rejected)
    assert result.error.reason == "too_many_headers"


def test_truncated_head_is_400() -> None:
    result, status, _, _, _ = rejected(valid()[:40])
    assert (status, result.error.reason) == (400, "incomplete_request")


# -- authentication (RFC 6750) ------------------------------------------------------------


def test_missing_token_is_401_with_a_plain_challenge() -> None:
    result, status, headers, body, calls = rejected(valid("/ws"))
    assert (status, result.error.reason, calls) == (401, "missing_token", 0)
    assert headers["www-authenticate"] == 'Bearer realm="wsauth"'
    assert body == b"401 Unauthorized\n"


def test_wrong_token_is_401_invalid_token() -> None:
    result, status, headers, _body, calls = rejected(valid("/ws?token=wrong-token"))
    assert (status, result.error.reason, result.error.source, calls) == (
        401,
        "unknown_token",
        "query",
        1,
    )
    assert headers["www-authenticate"] == 'Bearer realm="wsauth", error="invalid_token"'
    assert b"wrong-token" not in result.response


def test_realm_is_configurable() -> None:
    _, _, headers, _, _ = rejected(valid("/ws"), realm="chat")
    assert headers["www-authenticate"] == 'Bearer realm="chat"'


def test_empty_bearer_credential_is_400_invalid_request() -> None:
    result, status, headers, _, calls = rejected(valid("/ws", extra="Authorization: Bearer \r\n"))
    assert (status, result.error.reason, calls) == (400, "malformed_authorization", 0)
    assert 'error="invalid_request"' in headers["www-authenticate"]


def test_token_in_two_places_is_400() -> None:
    result, status, headers, _, calls = rejected(valid(extra=f"Authorization: Bearer {SECRET}\r\n"))
    assert (status, result.error.reason, calls) == (400, "token_in_several_places", 0)
    assert 'error="invalid_request"' in headers["www-authenticate"]


def test_duplicate_query_parameter_is_400() -> None:
    result, status, _, _, calls = rejected(valid(f"/ws?token={SECRET}&token=other"))
    assert (status, calls) == (400, 0)
    assert result.error.reason == "duplicate_query_token"


def test_empty_query_token_is_401_without_verifier() -> None:
    result, status, _, _, calls = rejected(valid("/ws?token="))
    assert (status, result.error.reason, calls) == (401, "empty_token", 0)


def bearer_with_roomy_limits(token_length: int) -> tuple[Rejected, SpyVerifier]:
    """A bearer token of ``token_length`` under head limits raised to let it through.

    With the default 8 KiB header line such tokens are refused earlier (431).
    """
    spy = SpyVerifier()
    handshake = ServerHandshake(
        HandshakePolicy(verifier=spy),
        limits=HeadLimits(max_line_length=16 * 1024, max_head_size=32 * 1024),
    )
    result = handshake.receive_data(
        valid("/ws", extra=f"Authorization: Bearer {'a' * token_length}\r\n")
    )
    assert isinstance(result, Rejected)
    return result, spy


def test_token_over_8_kib_is_401_without_verifier() -> None:
    # A deployment that raises the line limit still never hands it to the verifier.
    result, spy = bearer_with_roomy_limits(8193)
    status, headers, _ = parse_response(result.response)
    assert (status, result.error.reason, spy.calls) == (401, "token_too_long", [])
    assert 'error="invalid_token"' in headers["www-authenticate"]


def test_token_of_exactly_8_kib_reaches_the_verifier() -> None:
    result, spy = bearer_with_roomy_limits(8192)
    assert (result.error.reason, len(spy.calls)) == ("unknown_token", 1)


def test_verifier_exception_is_503_never_101() -> None:
    def broken(token: str) -> Identity:
        raise RuntimeError(f"database down while checking {token}")

    handshake = ServerHandshake(HandshakePolicy(verifier=broken, sources=(QueryToken(),)))
    result = handshake.receive_data(valid())
    assert isinstance(result, Rejected)
    status, headers, _body = parse_response(result.response)
    assert (status, result.error.reason, result.error.detail) == (
        503,
        "verifier_error",
        "RuntimeError",
    )
    assert headers["retry-after"] == "5"
    assert SECRET.encode() not in result.response
    assert SECRET not in str(result.error)


# -- sources ------------------------------------------------------------------------------


def test_bearer_scheme_is_case_insensitive() -> None:
    result, _, _ = decide(valid("/ws", extra=f"Authorization: bEaReR {SECRET}\r\n"))
    assert isinstance(result, Accept)
    assert result.identity.source == "bearer"


def test_cookie_source() -> None:
    result, _, _ = decide(
        valid(
            "/ws", extra=f"Cookie: theme=dark; token={SECRET}\r\nOrigin: https://app.example\r\n"
        ),
        sources=(CookieToken(),),
        allowed_origins=("https://app.example",),
    )
    assert isinstance(result, Accept)
    assert result.identity.source == "cookie"


def test_subprotocol_token_selects_the_marker_and_never_the_token() -> None:
    result, _, handshake = decide(
        valid("/ws", extra=f"Sec-WebSocket-Protocol: bearer, {SECRET}\r\n")
    )
    assert isinstance(result, Accept)
    assert result.identity.source == "subprotocol"
    response = handshake.accept(result)
    assert parse_response(response)[1]["sec-websocket-protocol"] == "bearer"
    assert SECRET.encode() not in response
    assert SECRET not in repr(result.request)


def test_subprotocol_token_prefers_an_application_subprotocol_the_client_offered() -> None:
    result, _, handshake = decide(
        valid("/ws", extra=f"Sec-WebSocket-Protocol: chat.v1, bearer, {SECRET}\r\n"),
        subprotocols=("chat.v2", "chat.v1"),
    )
    assert isinstance(result, Accept)
    assert parse_response(handshake.accept(result))[1]["sec-websocket-protocol"] == "chat.v1"


def test_prefixed_base64url_subprotocol_token() -> None:
    entry = encode_subprotocol_token(SECRET)
    assert entry.startswith("base64url.bearer.")
    result, _, handshake = decide(
        valid("/ws", extra=f"Sec-WebSocket-Protocol: chat.v1, {entry}\r\n"),
        subprotocols=("chat.v1",),
    )
    assert isinstance(result, Accept)
    response = handshake.accept(result)
    assert parse_response(response)[1]["sec-websocket-protocol"] == "chat.v1"
    for form in secret_forms():
        assert form.encode() not in response


def test_prefixed_token_alone_has_nothing_to_select_and_is_400() -> None:
    entry = encode_subprotocol_token(SECRET)
    result, status, _, _, calls = rejected(
        valid("/ws", extra=f"Sec-WebSocket-Protocol: {entry}\r\n")
    )
    assert (status, result.error.reason, calls) == (400, "no_subprotocol_to_select", 0)


def test_bad_base64url_in_prefixed_token_is_401() -> None:
    result, status, _, _, calls = rejected(
        valid("/ws", extra="Sec-WebSocket-Protocol: chat, base64url.bearer.%%%\r\n"),
        subprotocols=("chat",),
    )
    assert (status, result.error.reason, calls) == (401, "bad_base64url", 0)


def test_marker_without_token_is_400() -> None:
    result, status, _, _, _ = rejected(valid("/ws", extra="Sec-WebSocket-Protocol: bearer\r\n"))
    assert (status, result.error.reason) == (400, "subprotocol_marker_without_token")


def test_application_subprotocol_without_token_source_is_selected_from_offer() -> None:
    result, _, handshake = decide(
        valid(extra="Sec-WebSocket-Protocol: chat, superchat\r\n"), subprotocols=("superchat",)
    )
    assert isinstance(result, Accept)
    assert parse_response(handshake.accept(result))[1]["sec-websocket-protocol"] == "superchat"


def test_unoffered_subprotocol_is_never_selected() -> None:
    result, _, handshake = decide(
        valid(extra="Sec-WebSocket-Protocol: chat\r\n"), subprotocols=("superchat",)
    )
    assert isinstance(result, Accept)
    assert "sec-websocket-protocol" not in parse_response(handshake.accept(result))[1]


def test_rejections_never_echo_request_values() -> None:
    marker = "ECHO-ME-" + base64.b16encode(b"probe").decode()
    for data in (
        valid(f"/{marker}"),
        valid(f"/ws?token={marker}"),
        valid("/ws", extra=f"Authorization: Bearer {marker}\r\n"),
    ):
        result, _, _ = decide(data)
        assert isinstance(result, Rejected)
        assert marker.encode() not in result.response


# -- A head parsed by another server gets the wire's checks, without being re-parsed ------


def _fields(data: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Split raw head bytes the way a host server would hand them over (no validation)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    request_line, *lines = head.split("\r\n")
    method, target, version = request_line.split(" ", 2)
    headers = [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines)]
    return method, target, version, headers


PARSED_CASES = {
    "valid": valid(),
    "request line over 8 KiB": valid(target="/ws?pad=" + "a" * 8200),
    "header line over 8 KiB": valid(extra="X-Pad: " + "b" * 8200 + "\r\n"),
    "129 headers": valid(extra="".join(f"X-H{n}: v\r\n" for n in range(129))),
    "head over 16 KiB": valid(extra="".join(f"X-H{n}: {'c' * 4000}\r\n" for n in range(5))),
    "space in a header name": valid(extra="Bad Name: v\r\n"),
    "no Host": valid().replace(b"Host: 127.0.0.1\r\n", b""),
    "HTTP/1.0": valid().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "control byte in a value": valid(extra="X-Evil: a\x01b\r\n"),
    "two Content-Length values": valid(extra="Content-Length: 1\r\nContent-Length: 2\r\n"),
}


@pytest.mark.parametrize("case", PARSED_CASES)
def test_a_parsed_head_gets_the_same_answer_as_its_bytes(case: str) -> None:
    data = PARSED_CASES[case]
    wire, _, _ = decide(data)
    method, target, version, headers = _fields(data)
    spy = SpyVerifier()
    handshake = ServerHandshake(HandshakePolicy(verifier=spy, sources=(QueryToken(),)))
    request = UpgradeRequest.from_fields(
        method=method, target=target, headers=headers, http_version=version
    )
    head = handshake.receive_request(request)
    parsed = handshake.decide() if head is True else head
    assert type(parsed) is type(wire)
    if isinstance(wire, Rejected):
        assert isinstance(parsed, Rejected)
        assert (parsed.error.status, parsed.error.reason) == (wire.error.status, wire.error.reason)
        assert parse_response(parsed.response)[:2] == parse_response(wire.response)[:2]
    else:
        assert isinstance(parsed, Accept) and isinstance(wire, Accept)
        response = handshake.accept(parsed)
        assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert f"Sec-WebSocket-Accept: {ACCEPT}\r\n".encode() in response
