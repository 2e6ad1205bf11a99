"""Property-based tests: random and mutated handshakes and frames, at the core and live.

Whatever arrives, the core answers with "need more", a 101 for a valid token, or a
complete 4xx/5xx response, never an exception; a live server stays up and keeps
serving a normal client.
"""

from __future__ import annotations

import logging
import socket

from helpers import SECRET, feed, frame, handshake_bytes, make_app, open_raw_ws, running, ws_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from wsauth_sync import Accept, HandshakePolicy, QueryToken, Rejected, ServerHandshake
from wsauth_sync.core.verifiers import StaticTokens
from wsauth_sync.echo import WELCOME

POLICY = HandshakePolicy(verifier=StaticTokens({SECRET: "alice"}), sources=(QueryToken(),))
VALID = handshake_bytes(f"/ws?token={SECRET}")


def run_core(data: bytes, chunks: list[int]) -> Accept | Rejected | None:
    pieces, position = [], 0
    for size in [*chunks, len(data)]:
        pieces.append(data[position : position + size])
        position += size
    return feed(ServerHandshake(POLICY), pieces)


def assert_sane(result: Accept | Rejected | None, data: bytes) -> None:
    if isinstance(result, Accept):
        # Only a request carrying the valid token can ever be accepted.
        assert SECRET.encode() in data
        assert result.identity.subject == "alice"
    else:
        assert isinstance(result, Rejected)  # EOF always ends in a decision
        assert 400 <= result.error.status < 600
        assert result.response == b"" or result.response.startswith(
            f"HTTP/1.1 {result.error.status} ".encode()
        )
        assert SECRET.encode() not in result.response


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), chunks=st.lists(st.integers(1, 64), max_size=8))
def test_random_bytes_never_raise(data: bytes, chunks: list[int]) -> None:
    assert_sane(run_core(data, chunks), data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            line_end = data.find(b"\r\n", at)
            line_start = data.rfind(b"\r\n", 0, at)
            if line_end > line_start >= 0:
                data[line_end:line_end] = data[line_start:line_end]
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(data=mutated(), chunks=st.lists(st.integers(1, 64), max_size=8))
def test_mutated_handshakes_never_raise(data: bytes, chunks: list[int]) -> None:
    assert_sane(run_core(data, chunks), data)


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.integers(1, 40), min_size=1, max_size=40))
def test_any_split_of_a_valid_handshake_gives_the_same_101(chunks: list[int]) -> None:
    reference = ServerHandshake(POLICY)
    expected = reference.receive_data(VALID)
    assert isinstance(expected, Accept)
    result = run_core(VALID, chunks)
    assert isinstance(result, Accept)
    handshake = ServerHandshake(POLICY)
    handshake.receive_data(VALID)
    assert handshake.accept(result) == reference.accept(expected)


# -- live server ----------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """Collects ERROR records (tracebacks included) from every logger while installed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorRecords:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)
        assert not self.records, [r.getMessage() for r in self.records]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(head=st.one_of(mutated(), st.binary(max_size=512)))
def test_live_server_survives_random_handshakes(head: bytes) -> None:
    with ErrorRecords(), running(make_app(handshake_timeout=0.5)) as server:
        with socket.create_connection(server.address, timeout=3) as sock:
            try:
                sock.sendall(head)
                sock.shutdown(socket.SHUT_WR)
                response = sock.recv(65536)
            except OSError:
                response = b""
        assert response == b"" or response.startswith(b"HTTP/1.1 ")
        if response.startswith(b"HTTP/1.1 101 "):
            assert SECRET.encode() in head  # a mutated key may still be a valid key
        with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
            assert ws.recv(timeout=3) == WELCOME


frames = st.builds(
    frame,
    opcode=st.integers(0, 15),
    payload=st.binary(max_size=300),
    fin=st.booleans(),
    mask=st.booleans(),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(st.one_of(frames, st.binary(max_size=64)), min_size=1, max_size=6))
def test_live_server_survives_random_frames(sequence: list[bytes]) -> None:
    with ErrorRecords(), running(make_app(close_timeout=0.5)) as server:
        sock = open_raw_ws(server)
        with sock:
            try:
                sock.sendall(b"".join(sequence))
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:
                pass
        with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
            assert ws.recv(timeout=3) == WELCOME
            ws.send("after the storm")
            assert ws.recv(timeout=3) == "You said: after the storm"
