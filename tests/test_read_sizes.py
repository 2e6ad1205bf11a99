"""Reads sized to what has arrived: every message comes back whole and in order.

The reader waits with a small buffer and, once a read fills it, takes what else the
kernel holds in one read; these tests send bursts that straddle those sizes.
"""

from __future__ import annotations

import socket
import time

from helpers import frame, make_app, open_raw_ws, read_frames, running

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
