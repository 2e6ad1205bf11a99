"""CPU of the sans-I/O framing alone, per round trip: one masked client frame in, the reply out.

    python3 benchmarks/frame_cost.py

This is the floor the dependencies set for W1 and W2, without sockets or threads: wsproto
(which wsauth_sync drives) decoding the client's frame (unmasking included) and encoding
the server's reply, beside the ``websockets`` library's own protocol object. It also
shows what feeding wsproto in small pieces costs, and wsproto's cost per fragment of a
message sent in 64-byte fragments (Autobahn 9.3.x / 9.4.x).
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable
from typing import NamedTuple

from websockets.protocol import OPEN, Protocol, Side
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Message, TextMessage


class Workload(NamedTuple):
    """One client frame and the reply the echo server sends to it."""

    name: str
    text: bool
    payload: bytes


SMALL = Workload("W1: 32 B text, reply 'You said: ...'", True, b"x" * 32)
LARGE = Workload("W2: 64 KiB binary, echoed", False, bytes(range(256)) * 256)


def masked_frame(payload: bytes, *, opcode: int, fin: bool = True) -> bytes:
    """A client frame as RFC 6455 §5.2 lays it out (clients always mask)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + body


def _reply(workload: Workload, data: str | bytes) -> Message[str] | Message[bytes]:
    if workload.text:
        return TextMessage(data="You said: " + str(data))
    return BytesMessage(data=data)  # type: ignore[arg-type]


def wsproto_round_trip(workload: Workload, frame: bytes, piece: int = 0) -> Callable[[], bytes]:
    """A callable: feed ``frame`` (whole, or in ``piece``-byte reads), collect, reply."""
    connection = Connection(ConnectionType.SERVER)
    pieces = [frame] if not piece else [frame[i : i + piece] for i in range(0, len(frame), piece)]

    def run() -> bytes:
        parts = []
        for chunk in pieces:
            connection.receive_data(chunk)
            parts += [event.data for event in connection.events()]
        data = parts[0] if len(parts) == 1 else type(parts[0])().join(parts)
        return connection.send(_reply(workload, data))

    return run


def websockets_round_trip(workload: Workload, frame: bytes) -> Callable[[], bytes]:
    protocol = Protocol(Side.SERVER, state=OPEN)  # past the handshake: framing only

    def run() -> bytes:
        protocol.receive_data(frame)
        received = protocol.events_received()[0]
        if workload.text:
            protocol.send_text(b"You said: " + received.data)
        else:
            protocol.send_binary(received.data)
        return b"".join(protocol.data_to_send())

    return run


def per_call(call: Callable[[], object], count: int) -> float:
    """Best of five: µs per call."""
    call()  # warm up
    return min(timeit.repeat(call, number=count, repeat=5)) / count * 1e6


def wsproto_cost(workload: Workload, count: int) -> float:
    """µs wsproto needs to decode ``workload``'s frame whole and encode the reply."""
    frame = masked_frame(workload.payload, opcode=1 if workload.text else 2)
    return per_call(wsproto_round_trip(workload, frame), count)


def fragment_cost(count: int) -> float:
    """µs wsproto needs per 64-byte fragment of a long text message (fed 64 KiB at a time)."""
    fragments = 1024
    frames = b"".join(
        masked_frame(b"y" * 64, opcode=1 if i == 0 else 0, fin=i == fragments - 1)
        for i in range(fragments)
    )
    connection = Connection(ConnectionType.SERVER)

    def run() -> None:
        for start in range(0, len(frames), 65536):
            connection.receive_data(frames[start : start + 65536])
            for _ in connection.events():
                pass

    return per_call(run, count) / fragments


HEAD = (
    b"GET /ws?token=TOKEN HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def handshake_costs(secret: str, token: str, count: int) -> dict[str, float]:
    """µs per handshake: h11 parsing the head, PyJWT checking the token (valid and not),
    and wsauth_sync's whole sans-I/O decision (parse, checks, verify, response bytes)."""
    import h11
    import jwt

    from wsauth_sync import JWTVerifier, QueryToken, WebSocketApp
    from wsauth_sync.core.handshake import ServerHandshake
    from wsauth_sync.echo import echo

    def parse() -> None:
        connection = h11.Connection(h11.SERVER)
        connection.receive_data(HEAD)
        connection.next_event()
        connection.next_event()

    app = WebSocketApp(
        {"/ws": echo},
        verifier=JWTVerifier(key=secret, algorithms=["HS256"]),
        sources=[QueryToken()],
        limiter=None,
    )

    def decide(head: bytes) -> Callable[[], object]:
        def run() -> object:
            handshake = ServerHandshake(
                app.policy, limits=app.head_limits, client=("127.0.0.1", 50000)
            )
            decision = handshake.receive_data(head)
            return handshake.accept(decision) if hasattr(decision, "key") else decision

        return run

    def check(value: str) -> Callable[[], object]:
        def run() -> object:
            try:
                return jwt.decode(value, secret, algorithms=["HS256"])
            except jwt.InvalidTokenError:
                return None

        return run

    return {
        "h11 parse": per_call(parse, count),
        "JWT valid": per_call(check(token), count),
        "JWT invalid": per_call(check("not-a-valid-token"), count),
        "decision accept": per_call(decide(HEAD.replace(b"TOKEN", token.encode())), count),
        "decision refuse": per_call(decide(HEAD.replace(b"TOKEN", b"not-a-valid-token")), count),
    }


#: Memory walked between calls by :func:`wsgi_refusal_cost` with ``evict=True``: twice
#: the L2 cache of this machine's cores (4 MiB each), so each call starts with cold caches.
EVICT_BYTES = 8 * 1024 * 1024


def wsgi_refusal_cost(count: int, *, evict: bool = False) -> float:
    """µs for the WSGI middleware to refuse a bad token in-process: the app gunicorn runs
    in W4 (``servers.wsauth_wsgi_app``), given the environ gunicorn builds for W4's
    request, up to the refusal through ``start_response``.

    With ``evict``, :data:`EVICT_BYTES` of memory are walked before each call and only
    the call is timed: the refusal as it runs inside a busy server, whose other work
    (the host's parser, the kernel, other threads) has pushed it out of the caches.
    """
    import socket

    from servers import wsauth_wsgi_app

    middleware = wsauth_wsgi_app()
    ours, theirs = socket.socketpair()  # the socket the host would offer for a takeover
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/ws",
        "QUERY_STRING": "token=not-a-valid-token",
        "RAW_URI": "/ws?token=not-a-valid-token",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_SOFTWARE": "gunicorn",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_UPGRADE": "websocket",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS": "permessage-deflate; client_max_window_bits",
        "wsgi.url_scheme": "http",
        "gunicorn.socket": ours,
    }
    answered: list[str] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        answered.append(status)

    def run() -> None:
        middleware(dict(base), start_response)

    try:
        cost = _evicted_per_call(run, count) if evict else per_call(run, count)
    finally:
        ours.close()
        theirs.close()
    assert set(answered) == {"401 Unauthorized"}, set(answered)
    return cost


def _evicted_per_call(call: Callable[[], object], count: int) -> float:
    """µs per call, each call timed alone after :data:`EVICT_BYTES` are walked."""
    import gc
    import time

    memory = bytearray(EVICT_BYTES)
    call()
    spent = 0
    gc.disable()  # as timeit does for per_call
    try:
        for _ in range(count):
            memory[::64] = bytes(len(memory[::64]))  # touch every cache line
            started = time.thread_time_ns()
            call()
            spent += time.thread_time_ns() - started
    finally:
        gc.enable()
    return spent / count / 1000


def main() -> None:
    def show(label: str, microseconds: float) -> None:
        print(f"  {label:<32}{microseconds:8.1f} µs")

    for workload, count in ((SMALL, 20000), (LARGE, 500)):
        frame = masked_frame(workload.payload, opcode=1 if workload.text else 2)
        print(workload.name)
        show("wsproto, frame fed whole:", per_call(wsproto_round_trip(workload, frame), count))
        if len(frame) > 1024:
            for piece in (1024, 16384):
                show(
                    f"wsproto, fed {piece // 1024} KiB at a time:",
                    per_call(wsproto_round_trip(workload, frame, piece), count // 10),
                )
        show("websockets:", per_call(websockets_round_trip(workload, frame), count))
    print("Many small fragments (64-byte text fragments)")
    show("wsproto, per fragment:", fragment_cost(20))
    print("The WSGI middleware refusing a bad token, in-process")
    show("wsauth_sync WSGI refusal:", wsgi_refusal_cost(2000))
    show("the same, caches evicted:", wsgi_refusal_cost(2000, evict=True))


if __name__ == "__main__":
    main()
