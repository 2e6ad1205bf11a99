"""Peers that stop reading: bounded sends, a timer thread that never waits, keepalive.

Each hostile peer is a raw socket on 127.0.0.1 with a small receive buffer that never
reads, so the server's writes to it stall once the kernel buffers are full.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import SECRET, frame, handshake_bytes, make_app, read_101, running, wait_for, ws_url
from websockets.exceptions import ConnectionClosed as WSConnectionClosed
from websockets.sync.client import connect

from wsauth_sync import ConnectionClosed, Identity, QueryToken, WebSocket, WebSocketServer
from wsauth_sync.echo import WELCOME, echo

CHUNK = b"x" * 65536


def open_wedged(
    server: WebSocketServer,
    target: str,
    *,
    rcvbuf: int = 4096,
    wrap: Callable[[socket.socket], socket.socket] | None = None,
) -> socket.socket:
    """A connection past its 101 whose owner will never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
    sock.settimeout(3)
    sock.connect(server.address)
    if wrap is not None:
        sock = wrap(sock)
    sock.sendall(handshake_bytes(target))
    read_101(sock)
    return sock


class Firehose:
    """A handler that sends until the connection fails, recording how its sends ended."""

    def __init__(self) -> None:
        self.open: list[WebSocket] = []
        self.ended: queue.Queue[tuple[int, float]] = queue.Queue()
        self.sent = 0

    def __call__(self, ws: WebSocket) -> None:
        self.open.append(ws)
        try:
            while True:
                ws.send(CHUNK)
                self.sent += 1
        except ConnectionClosed as closed:
            self.ended.put((closed.code, time.monotonic()))

    def wait_stalled(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` handlers run and their sends stopped completing."""
        assert wait_for(lambda: len(self.open) >= count, timeout)
        deadline = time.monotonic() + timeout
        last = -1
        while self.sent != last and time.monotonic() < deadline:
            last = self.sent
            time.sleep(0.3)
        assert self.sent == last, "sends kept completing: the peers are not wedged"


def closed_codes(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.getMessage().startswith("closed ")]


@contextlib.contextmanager
def closing_all(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_send_to_a_peer_that_never_reads_fails_after_send_timeout(
    logs: pytest.LogCaptureFixture,
) -> None:
    firehose = Firehose()
    app = make_app(
        routes={"/firehose": firehose, "/ws": echo}, send_timeout=0.5, ping_interval=None
    )
    with running(app) as server, closing_all([]) as socks:
        socks.append(open_wedged(server, f"/firehose?token={SECRET}"))
        started = time.monotonic()
        code, ended = firehose.ended.get(timeout=10)
        assert code == 1006
        assert ended - started < 5  # 0.5 s without progress once the buffers are full
        assert wait_for(lambda: any("code=1006" in line for line in closed_codes(logs)))
        # The thread is free and the server serves others as before.
        with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
            assert ws.recv(timeout=3) == WELCOME


def test_deadlines_stay_on_time_with_100_wedged_peers() -> None:
    """Expiry and close_soon (revocation) within 1 s of due while 100 sends are stuck."""
    firehose = Firehose()
    held: dict[str, WebSocket] = {}
    due: dict[str, float] = {}

    def verifier(token: str) -> Identity:
        if token == "victim":  # expires 2 s after its handshake
            due[token] = time.monotonic() + 2.0
            return Identity(subject=token, expires_at=time.time() + 2.0)
        return Identity(subject=token)

    def hold(ws: WebSocket) -> None:
        held[ws.identity.subject] = ws
        for _ in ws:
            pass

    # Pings due on every wedged connection all the time: work for the timer thread that
    # must not cost it a wait. send_timeout is long so the sends stay stuck throughout.
    app = make_app(
        routes={"/firehose": firehose, "/ws": hold},
        verifier=verifier,
        sources=[QueryToken()],
        ping_interval=0.2,
        ping_timeout=30,
        send_timeout=30,
        limiter=None,
        max_connections_per_ip=None,
    )  # 100 peers from one loopback address
    with running(app) as server, closing_all([]) as socks:
        for n in range(100):
            socks.append(open_wedged(server, f"/firehose?token=wedged-{n}"))
        firehose.wait_stalled(100)
        with (
            connect(f"{ws_url(server)}?token=victim", open_timeout=5) as victim,
            connect(f"{ws_url(server)}?token=revoked", open_timeout=5) as revoked,
        ):
            assert wait_for(lambda: "revoked" in held and "victim" in held, 5)

            # Revocation of the 100 wedged peers and one healthy one: never waits.
            def revoke() -> None:
                for ws in [*firehose.open, held["revoked"]]:
                    ws.close_soon(1008, "credential revoked")

            revoker = threading.Thread(target=revoke, daemon=True)
            revoker.start()
            revoker.join(1.0)
            assert not revoker.is_alive(), "close_soon waited on a wedged connection"
            revoked_at = time.monotonic()
            with pytest.raises(WSConnectionClosed) as info:
                revoked.recv(timeout=3)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            assert time.monotonic() - revoked_at < 1.0
            with pytest.raises(WSConnectionClosed) as info:
                while True:
                    victim.recv(timeout=max(0.1, due["victim"] + 3 - time.monotonic()))
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            assert time.monotonic() - due["victim"] < 1.0
        # The wedged peers could not be sent a Close: TCP was dropped, their threads freed.
        codes = [firehose.ended.get(timeout=5)[0] for _ in range(100)]
        assert set(codes) <= {1006, 1008}


def receive_only(ws: WebSocket) -> None:
    for _ in ws:
        pass


@pytest.mark.parametrize("handler_reads", [True, False], ids=["reading", "busy handler"])
def test_keepalive_closes_a_peer_that_sends_but_never_reads(
    logs: pytest.LogCaptureFixture, handler_reads: bool
) -> None:
    """Bytes from the peer are not life: only the Pong to our Ping is (RFC 6455 §5.5.3)."""
    release = threading.Event()

    def busy(ws: WebSocket) -> None:
        release.wait(10)  # not reading: the peer's bytes wait in the kernel

    handler = receive_only if handler_reads else busy
    app = make_app(routes={"/ws": handler}, ping_interval=0.2, ping_timeout=0.3)
    try:
        with running(app) as server, closing_all([]) as socks:
            sock = open_wedged(server, f"/ws?token={SECRET}")
            socks.append(sock)
            deadline = time.monotonic() + 5
            dropped = False
            while not dropped and time.monotonic() < deadline:
                try:
                    sock.sendall(frame(0x1, b"still talking"))
                except OSError:
                    dropped = True  # the server dropped TCP
                time.sleep(0.05)
            assert dropped
            release.set()
            assert wait_for(lambda: any("code=1011" in line for line in closed_codes(logs)))
    finally:
        release.set()


def test_peer_that_reads_and_answers_stays_open_while_the_handler_is_busy() -> None:
    release = threading.Event()

    def busy_then_echo(ws: WebSocket) -> None:
        ws.send(WELCOME)
        release.wait(10)
        echo(ws)

    app = make_app(routes={"/ws": busy_then_echo}, ping_interval=0.1, ping_timeout=0.2)
    try:
        with (
            running(app) as server,
            connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws,
        ):
            assert ws.recv(timeout=3) == WELCOME
            ws.send("queued while the handler is busy")
            with pytest.raises(TimeoutError):
                ws.recv(timeout=1.0)  # several ping rounds; the library reads the Pongs
            release.set()
            ws.send("now")
            assert ws.recv(timeout=3) == WELCOME  # echo() greets again
            assert ws.recv(timeout=3) == "You said: queued while the handler is busy"
            assert ws.recv(timeout=3) == "You said: now"
    finally:
        release.set()


def test_ping_flood_does_not_wedge_a_receive_only_handler() -> None:
    """A peer that floods Pings and never reads their Pongs: the handler keeps reading.

    Pongs not yet written are replaced by the latest (RFC 6455 §5.5.3), and writing one
    is bounded by send_timeout, so the handler either goes on receiving or sees the
    connection fail; it is never stuck in a write.
    """
    heard: queue.Queue[str | int] = queue.Queue()

    def listener(ws: WebSocket) -> None:
        try:
            while True:
                message = ws.recv()
                heard.put(message if isinstance(message, str) else "binary")
        except ConnectionClosed as closed:
            heard.put(closed.code)

    app = make_app(routes={"/ws": listener}, send_timeout=2.0, ping_interval=None)
    with running(app) as server, closing_all([]) as socks:
        sock = open_wedged(server, f"/ws?token={SECRET}")
        socks.append(sock)
        sock.settimeout(0.2)
        pings = frame(0x9, b"p" * 125) * 512  # one Pong each would fill any buffer
        flood_until = time.monotonic() + 2
        while time.monotonic() < flood_until:
            with contextlib.suppress(OSError):
                sock.sendall(pings)
        hello = frame(0x1, b"hello after the flood")
        deadline = time.monotonic() + 15
        sent = False
        while not sent and heard.empty() and time.monotonic() < deadline:
            try:
                sock.sendall(hello)  # queued behind the pings the server has not read
                sent = True
            except socket.timeout:
                pass
        assert heard.get(timeout=max(0.1, deadline - time.monotonic())) in (
            "hello after the flood",
            1006,
        )


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_send_timeout_must_be_positive(value: float) -> None:
    from wsauth_sync import ConfigurationError

    with pytest.raises(ConfigurationError):
        make_app(send_timeout=value)
