"""Who gets a handshake slot and a connection: attacks on the server's admission policy.

Each test plays an attacker over real sockets on 127.0.0.1 (attackers connect from other
loopback addresses) and checks what a legitimate client sees meanwhile. Waits are
bounded; counts are kept small enough for a shared two-core machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trustme
from helpers import (
    SECRET,
    handshake_bytes,
    make_app,
    parse_response,
    read_response,
    read_until_closed,
    running,
    wait_for,
)
from websockets.sync.client import connect

from wsauth_sync import StaticTokens, WebSocketServer, handle_socket
from wsauth_sync.echo import WELCOME

ATTACKERS = [f"127.0.0.{n}" for n in range(2, 10)]
TOKENS = {f"user-token-{n:03d}-abcdef": f"user{n}" for n in range(220)}


def served(server: WebSocketServer, token: str = SECRET, timeout: float = 3.0) -> bool:
    """True if a real client gets the 101 and the welcome message within ``timeout``."""
    host, port = server.address
    try:
        with connect(
            f"ws://{host}:{port}/ws?token={token}", open_timeout=timeout, close_timeout=1
        ) as ws:
            return ws.recv(timeout=timeout) == WELCOME
    except Exception:
        return False


# -- TLS: the deadline bounds every read until the decision --------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def stall_inside_a_record(address: tuple[str, int], ca: trustme.CA) -> ssl.SSLSocket:
    """Complete TLS, then send a record header for 64 bytes and only 3 of them."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    raw = socket.create_connection(address, timeout=5)
    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
    # Written under TLS's feet: the server sees a record that never completes.
    socket.socket.sendall(tls, b"\x17\x03\x03\x00\x40abc")
    return tls


def raw_closed_within(tls: ssl.SSLSocket, seconds: float) -> bool:
    """True if the server closes the connection within ``seconds`` (raw bytes ignored)."""
    tls.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not socket.socket.recv(tls, 65536):
                return True
    except (socket.timeout, ConnectionResetError):
        return not isinstance(sys.exc_info()[1], socket.timeout)
    return False


def test_tls_record_stalled_after_the_handshake_is_cut_off_at_the_deadline(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsauth_sync")
    with running(make_app(handshake_timeout=1.0), ssl_context=server_context(ca)) as server:
        stalled = [stall_inside_a_record(server.address, ca) for _ in range(20)]
        try:
            started = time.monotonic()
            assert all(raw_closed_within(tls, 4.0) for tls in stalled)
            assert time.monotonic() - started < 4.0  # deadline 1 s, not "never"
        finally:
            for tls in stalled:
                tls.close()
    assert wait_for(lambda: caplog.text.count("status=408 reason=handshake_timeout") == 20)


@contextlib.contextmanager
def one_tls_connection(
    ca: trustme.CA, handshake_timeout: float
) -> Iterator[tuple[socket.socket, threading.Thread, list[float]]]:
    """A caller's own accept loop handing one TLS connection to handle_socket(); yields the
    listener, the serving thread, and the time it returned (once it has)."""
    app = make_app(handshake_timeout=handshake_timeout)
    context = server_context(ca)
    listener = socket.create_server(("127.0.0.1", 0))
    finished: list[float] = []

    def serve_one() -> None:
        sock, address = listener.accept()
        handle_socket(sock, address, app, ssl_context=context)
        finished.append(time.monotonic())

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        yield listener, thread, finished
    finally:
        listener.close()


def test_handle_socket_bounds_tls_reads_by_the_deadline(ca: trustme.CA) -> None:
    """The same stall against handle_socket() in a caller's own accept loop."""
    with one_tls_connection(ca, 1.0) as (listener, thread, finished):
        tls = stall_inside_a_record(listener.getsockname(), ca)
        try:
            started = time.monotonic()
            thread.join(4.0)
            assert finished and finished[0] - started < 3.0
        finally:
            tls.close()


def test_refused_tls_client_stalling_during_the_drain_does_not_hold_the_thread(
    ca: trustme.CA,
) -> None:
    """A bad token gets its 401; a record stalled afterwards must not hold the thread."""
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    with one_tls_connection(ca, 5.0) as (listener, thread, finished):
        tls = client.wrap_socket(
            socket.create_connection(listener.getsockname(), timeout=5),
            server_hostname="127.0.0.1",
        )
        try:
            tls.sendall(handshake_bytes("/ws?token=wrong"))
            assert tls.recv(4096).startswith(b"HTTP/1.1 401 ")
            socket.socket.sendall(tls, b"\x17\x03\x03\x00\x40abc")  # stall while drained
            started = time.monotonic()
            thread.join(4.0)
            assert finished and finished[0] - started < 3.0  # the drain is 1 s at most
        finally:
            tls.close()


# -- pending handshakes: attackers holding slots, bursts behind a proxy -------------------------


@contextlib.contextmanager
def silent_flood(server: WebSocketServer, per_address: int) -> Iterator[list[socket.socket]]:
    """Keep ``per_address`` silent connections open from each attacker address, reopening
    the ones the server drops, until the block ends."""
    stop = threading.Event()
    held: list[socket.socket] = []

    def flood() -> None:
        while not stop.is_set():
            for sock in [s for s in held if s.fileno() == -1 or _dropped(s)]:
                held.remove(sock)
                sock.close()
            for ip in ATTACKERS:
                mine = sum(1 for s in held if s.getsockname()[0] == ip)
                for _ in range(per_address - mine):
                    with contextlib.suppress(OSError):
                        held.append(
                            socket.create_connection(
                                server.address, timeout=2, source_address=(ip, 0)
                            )
                        )
            stop.wait(0.05)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        yield held
    finally:
        stop.set()
        thread.join(5)
        for sock in held:
            sock.close()


def _dropped(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(2)


def test_legitimate_client_is_served_while_attackers_hold_every_pending_slot() -> None:
    # The old defaults (128 in all, 16 per address): 8 addresses fill every slot.
    with (
        running(make_app(handshake_timeout=10.0), max_pending=128, max_pending_per_ip=16) as server,
        silent_flood(server, 16) as held,
    ):
        assert wait_for(lambda: len(held) >= 128, timeout=10)
        results = [served(server) for _ in range(10)]
        assert wait_for(lambda: len(held) >= 128, timeout=10)  # the flood is still on
    assert sum(results) >= 9, results


def test_two_hundred_parallel_handshakes_from_one_trusted_proxy_all_succeed() -> None:
    app = make_app(verifier=StaticTokens(TOKENS), trusted_proxies=["127.0.0.1"])
    barrier = threading.Barrier(200, timeout=20)
    statuses: list[int] = []
    lock = threading.Lock()

    def client(n: int, token: str) -> None:
        with socket.create_connection(server.address, timeout=15) as sock:
            barrier.wait()
            sock.sendall(
                handshake_bytes(
                    f"/ws?token={token}", extra=f"X-Forwarded-For: 198.51.100.{n % 250}\r\n"
                )
            )
            response = read_response(sock, timeout=15)
            status = int(response.split(b" ", 2)[1]) if response else 0
            with lock:
                statuses.append(status)
            barrier_done.wait(20)  # hold the connection until every client has its answer

    barrier_done = threading.Event()
    with running(app) as server:
        threads = [
            threading.Thread(target=client, args=(n, token), daemon=True)
            for n, token in enumerate(list(TOKENS)[:200])
        ]
        for thread in threads:
            thread.start()
        assert wait_for(lambda: len(statuses) == 200, timeout=30)
        barrier_done.set()
        for thread in threads:
            thread.join(10)
    assert statuses == [101] * 200


# -- open connections: one credential or one address cannot take them all -------------------


def test_one_credential_cannot_take_every_connection() -> None:
    app = make_app(max_connections_per_identity=3)
    with running(app, max_connections=8) as server:
        host, port = server.address
        url = f"ws://{host}:{port}/ws?token={SECRET}"
        stack = contextlib.ExitStack()
        held = [stack.enter_context(connect(url, open_timeout=3)) for _ in range(3)]
        try:
            with socket.create_connection(server.address, timeout=3) as sock:
                sock.sendall(handshake_bytes(f"/ws?token={SECRET}"))
                status, headers, _ = parse_response(read_until_closed(sock))
            assert (status, headers["retry-after"]) == (429, "5")
        finally:
            held.pop().close()
        assert wait_for(lambda: served(server))  # a place freed up for the same token
        stack.close()


def test_one_address_cannot_take_every_connection_but_others_can_still_connect() -> None:
    app = make_app(verifier=StaticTokens(TOKENS), max_connections_per_ip=4)
    tokens = list(TOKENS)
    with running(app, max_connections=16) as server:
        host, port = server.address
        stack = contextlib.ExitStack()
        for n in range(4):
            stack.enter_context(connect(f"ws://{host}:{port}/ws?token={tokens[n]}", open_timeout=3))
        try:
            with socket.create_connection(server.address, timeout=3) as sock:
                sock.sendall(handshake_bytes(f"/ws?token={tokens[5]}"))
                status, headers, _ = parse_response(read_until_closed(sock))
            assert (status, headers["retry-after"]) == (429, "5")
            with socket.create_connection(
                server.address, timeout=3, source_address=(ATTACKERS[0], 0)
            ) as sock:
                sock.sendall(handshake_bytes(f"/ws?token={tokens[6]}"))
                assert read_response(sock).startswith(b"HTTP/1.1 101 ")
        finally:
            stack.close()


# -- a failed thread start must not take the server down -----------------------------------

THREAD_STARVED_SERVER = r"""
import resource, sys, threading
from wsauth_sync import StaticTokens, WebSocketApp, WebSocketServer
from wsauth_sync.echo import echo
app = WebSocketApp({"/ws": echo}, verifier=StaticTokens({sys.argv[1]: "alice"}),
                   sources=[__import__("wsauth_sync").QueryToken()])
threading.stack_size(64 * 1024 * 1024)
server = WebSocketServer(app, port=0)
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 8 * 64 * 1024 * 1024, resource.RLIM_INFINITY))
print(server.address[1], flush=True)
server.serve_forever()
"""


def test_a_failed_thread_start_refuses_one_connection_and_the_server_goes_on() -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", THREAD_STARVED_SERVER, SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        url = f"ws://127.0.0.1:{port}/ws?token={SECRET}"
        refused = False
        with contextlib.ExitStack() as stack:
            held = 0
            for _ in range(40):  # the address-space limit runs out of threads well before
                try:
                    ws = stack.enter_context(connect(url, open_timeout=3, close_timeout=1))
                    assert ws.recv(timeout=3) == WELCOME
                    held += 1
                except Exception:
                    refused = True
                    break
            assert refused and held, "the thread limit was never reached"
            assert process.poll() is None  # the server lives on
        # Counters were kept right: as many connections fit again as before.
        with contextlib.ExitStack() as stack:
            for _ in range(held):
                ws = stack.enter_context(connect(url, open_timeout=3, close_timeout=1))
                assert ws.recv(timeout=3) == WELCOME
        assert process.poll() is None
    finally:
        process.kill()
        process.communicate(timeout=10)
