"""Reads sized to what has arrived: every message comes back whole and in order.

The reader waits with a small buffer and, once a read fills it, takes what else the
kernel holds in one read; these tests send bursts that straddle those sizes.
"""

from __future__ import annotations

import socket
import time

from helpers import SECRET, frame, make_app, open_raw_ws, read_frames, running, ws_url
from websockets.sync.client import connect

from wsauth_sync import ConnectionClosed, WebSocket
from wsauth_sync.echo import WELCOME


def _welcomed(sock: socket.socket) -> None:
    assert read_frames(sock, 1) == [(0x1, WELCOME.encode())]


def test_a_burst_of_frames_around_the_read_sizes_is_echoed_whole_and_in_order() -> None:
    # Payloads whose frames end just before, at and after 1 KiB, a 64 KiB message and one
    # larger than the biggest single read (256 KiB), all written at once.
    sizes = [1, 1014, 1015, 1016, 1017, 1024, 65536, 300_000, 5]
    payloads = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    with running(make_app(max_message_size=1 << 20)) as server:
        sock = open_raw_ws(server)
        with sock:
            _welcomed(sock)
            sock.sendall(b"".join(frame(0x2, payload) for payload in payloads))
            echoed = read_frames(sock, len(payloads), timeout=10)
    assert echoed == [(0x2, payload) for payload in payloads]


def test_a_frame_whose_rest_arrives_later_is_one_message() -> None:
    payload = bytes(range(256)) * 300  # 76,800 bytes
    data = frame(0x2, payload) + frame(0x9, b"ping") + frame(0x1, b"after")
    with running(make_app()) as server:
        sock = open_raw_ws(server)
        with sock:
            _welcomed(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for cut in (1024, 2048, 40_000):  # the reader sees a full first read, then less
                sock.sendall(data[:cut])
                time.sleep(0.05)  # let the server read the head alone (no timing asserted)
                sock.sendall(data[cut:])
                frames = read_frames(sock, 3, timeout=5)
                # The reader answers the Ping at once, maybe before the handler's echo.
                assert (0xA, b"ping") in frames
                assert [f for f in frames if f[0] != 0xA] == [
                    (0x2, payload),
                    (0x1, b"You said: after"),
                ]


def test_a_message_too_big_still_closes_1009_when_it_arrives_in_one_burst() -> None:
    with running(make_app(max_message_size=100_000)) as server:
        sock = open_raw_ws(server)
        with sock:
            _welcomed(sock)
            sock.sendall(frame(0x2, b"x" * 100_001))
            ((opcode, payload),) = read_frames(sock, 1, timeout=5)
    assert opcode == 0x8 and payload[:2] == (1009).to_bytes(2, "big")


def _timed_echo(ws: WebSocket) -> None:
    """Echo with a 2.5 s receive timeout (0.2 s after "short"), saying how long each
    wait took."""
    ws.send(WELCOME)
    timeout = 2.5
    while True:
        started = time.monotonic()
        try:
            message = ws.recv(timeout=timeout)
        except TimeoutError:
            ws.send(f"timeout after {time.monotonic() - started:.2f}")
            continue
        except ConnectionClosed:
            return
        text = message if isinstance(message, str) else message.decode()
        ws.send(f"got {text} after {time.monotonic() - started:.2f}")
        timeout = 0.2 if text == "short" else 2.5


def _plain_echo(ws: WebSocket) -> None:
    ws.send(WELCOME)
    for message in ws:
        ws.send(f"got {message!s}")


def _seconds(reply: object) -> float:
    return float(str(reply).rsplit(" ", 1)[1])


def test_waits_past_the_busy_wait_keep_the_handlers_timeout_and_lose_nothing() -> None:
    # A connection that just received waits for the next message in recv for at most
    # 1 s, then in poll: neither the handler's timeout nor a later message may notice.
    routes = {"/ws": _timed_echo, "/plain": _plain_echo}
    with running(make_app(routes=routes)) as server:
        with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
            assert ws.recv(timeout=3) == WELCOME
            ws.send("a")  # the connection is now busy
            assert str(ws.recv(timeout=3)).startswith("got a after")
            time.sleep(1.5)  # past the busy wait, inside the handler's timeout
            ws.send("b")
            reply = ws.recv(timeout=3)
            assert str(reply).startswith("got b after") and _seconds(reply) >= 1.4
            reply = ws.recv(timeout=6)  # nothing sent: the handler's own 2.5 s, not 1 s
            assert str(reply).startswith("timeout after") and _seconds(reply) >= 2.45
            ws.send("short")  # busy again, and a timeout shorter than the busy wait
            assert str(ws.recv(timeout=3)).startswith("got short after")
            reply = ws.recv(timeout=3)
            assert str(reply).startswith("timeout after") and _seconds(reply) < 0.9
        with connect(f"{ws_url(server, '/plain')}?token={SECRET}", open_timeout=3) as ws:
            assert ws.recv(timeout=3) == WELCOME
            for text in ("x", "y", "z"):  # each after an idle gap longer than the wait
                ws.send(text)
                assert ws.recv(timeout=3) == f"got {text}"
                time.sleep(1.2)
