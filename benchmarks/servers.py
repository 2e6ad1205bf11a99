"""The Python servers under benchmark, all with the same behaviour.

Each one: the token in ``?token=`` is verified as an HS256 JWT before accepting (401 on
failure), then ``Welcome! You are authenticated.``, then text ``m`` gets ``You said: m``
and binary comes back as is. ``raw-tcp`` is the ceiling: a thread-per-connection TCP
echo with no WebSocket framing at all.

    python benchmarks/servers.py NAME PORT      (JWT secret in WSAUTH_BENCH_SECRET)

Prints ``ready`` once listening.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

SECRET = os.environ.get("WSAUTH_BENCH_SECRET", "benchmark-secret-of-32-bytes-min!")


def profile_threads(path: str) -> None:
    """cProfile every thread started from now on, in CPU time; write the stats at exit.

    Used by ``profile_server.py``: sampling profilers cannot tell a thread blocked in
    ``recv`` from one working, and these servers run many threads. Merged stats go to
    ``path``.
    """
    import atexit
    import cProfile
    import pstats
    import signal

    profiles: list[cProfile.Profile] = []
    run = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU time: waits do not count
        profiles.append(profile)
        profile.enable()
        try:
            run(self)
        finally:
            profile.disable()

    class Snapshot:
        """Finished calls only: disabling from this thread would charge calls still
        waiting (an idle worker's queue get) with this thread's clock."""

        def __init__(self, profile: cProfile.Profile) -> None:
            profile.snapshot_stats()
            self.stats = profile.stats  # type: ignore[attr-defined]

        def create_stats(self) -> None:
            pass

    def dump() -> None:
        if profiles:
            pstats.Stats(*[Snapshot(p) for p in profiles]).dump_stats(path)  # type: ignore
            profiles.clear()

    threading.Thread.run = profiled  # type: ignore[method-assign]
    atexit.register(dump)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


WELCOME = "Welcome! You are authenticated."


def check_jwt(token: str | None) -> bool:
    if not token:
        return False
    try:
        jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.InvalidTokenError:
        return False
    return True


def wsauth(port: int) -> None:
    from wsauth_sync import JWTVerifier, QueryToken, WebSocketApp, WebSocketServer
    from wsauth_sync.echo import echo

    app = WebSocketApp(
        {"/ws": echo},
        verifier=JWTVerifier(key=SECRET, algorithms=["HS256"]),
        sources=[QueryToken()],
        limiter=None,
        # One load generator, one token: per-client caps off, as for peers.
        max_connections_per_identity=None,
        max_connections_per_ip=None,
    )
    server = WebSocketServer(
        app,
        host="127.0.0.1",
        port=port,
        max_connections=4000,
        max_pending=4000,
        max_pending_per_ip=4000,
        backlog=1024,
    )
    print("ready", flush=True)
    server.serve_forever()


def wsauth_wsgi_app() -> Any:
    """The same app behind the WSGI middleware (run by gunicorn -k gthread)."""
    from wsauth_sync import JWTVerifier, QueryToken, WebSocketApp
    from wsauth_sync.echo import echo
    from wsauth_sync.wsgi import WebSocketMiddleware

    def not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [("Content-Length", "0")])
        return []

    return WebSocketMiddleware(
        not_found,
        WebSocketApp(
            {"/ws": echo},
            verifier=JWTVerifier(key=SECRET, algorithms=["HS256"]),
            sources=[QueryToken()],
            limiter=None,
            max_connections_per_identity=None,
            max_connections_per_ip=None,
        ),
        redact_host_logs=False,
    )


def timed_wsgi_app(path: str) -> Any:
    """``wsauth_wsgi_app`` with its own CPU per call measured inside the host (W4 only).

    Each call is timed with ``time.thread_time`` around the middleware alone, so the
    figure is what the refusal costs between gunicorn's steps, without gunicorn's. The
    mean so far is written to ``path`` every 100 calls as ``<calls> <µs per call>``.
    """
    app = wsauth_wsgi_app()
    spent: list[float] = []  # list.append is atomic: no lock across gunicorn's threads

    def timed(environ: dict[str, Any], start_response: Any) -> Any:
        started = time.thread_time()
        try:
            return app(environ, start_response)
        finally:
            spent.append(time.thread_time() - started)
            if len(spent) % 100 == 0:
                calls = len(spent)
                with open(path, "w") as out:
                    out.write(f"{calls} {sum(spent[:calls]) / calls * 1e6:.1f}\n")

    return timed


def refusing_wsgi_app() -> Any:
    """gunicorn's own floor for W4: a WSGI app that answers every request 401, unchecked."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("401 Unauthorized", [("Content-Length", "17")])
        return [b"401 Unauthorized\n"]

    return app


def spending_wsgi_app(microseconds: float) -> Any:
    """Calibration for W4: the bare 401 app after ``microseconds`` of pure Python CPU.

    Beside gunicorn alone and the middleware, it tells how much of the middleware's cost
    under gunicorn is the CPU it spends in-process and how much is the same amount of
    work done between gunicorn's own steps. The loop is sized once, at start-up, so that
    a request runs no clock reads or other system calls of its own.
    """
    sample = 200_000
    started = time.thread_time()
    _spin(sample)
    rounds = max(1, round(sample * microseconds / 1e6 / (time.thread_time() - started)))

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        _spin(rounds)
        start_response("401 Unauthorized", [("Content-Length", "17")])
        return [b"401 Unauthorized\n"]

    return app


def _spin(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i
    return total


def websockets_sync(port: int) -> None:
    from http import HTTPStatus

    from websockets.sync.server import serve

    def process_request(connection: Any, request: Any) -> Any:
        token = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        if not check_jwt(token):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "401 Unauthorized\n")
        return None

    def handler(ws: Any) -> None:
        ws.send(WELCOME)
        for message in ws:
            ws.send(f"You said: {message}" if isinstance(message, str) else message)

    with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=process_request,
        compression=None,
        max_size=2**20,
    ) as server:
        print("ready", flush=True)
        server.serve_forever()


def simple_websocket_app() -> Any:
    """simple-websocket (what flask-sock uses) as a WSGI app, for Werkzeug."""
    import simple_websocket

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        token = parse_qs(environ.get("QUERY_STRING", "")).get("token", [None])[0]
        if not check_jwt(token):
            start_response("401 Unauthorized", [("Content-Length", "17")])
            return [b"401 Unauthorized\n"]
        ws = simple_websocket.Server(environ, max_message_size=2**20)
        try:
            ws.send(WELCOME)
            while True:
                message = ws.receive()
                ws.send(f"You said: {message}" if isinstance(message, str) else message)
        except simple_websocket.ConnectionClosed:
            pass
        raise ConnectionAbortedError  # Werkzeug: the socket was taken over

    return app


def simple_websocket(port: int) -> None:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, simple_websocket_app(), threaded=True)
    print("ready", flush=True)
    server.serve_forever()


def raw_tcp(port: int) -> None:
    """Echo fixed 32-byte messages on a thread per connection: the framing-free ceiling."""
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def wsproto_alone(port: int) -> None:
    """wsproto driven directly, a thread per connection: the W1/W2 floor in a real server.

    The same behaviour with nothing else: the token checked, each read fed to wsproto,
    the replies written with one ``sendall``. No limits, no deadlines, no locks, a 64 KiB
    read buffer: what wsproto and the threads cost by themselves under the same load.
    """
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Ping,
        RejectConnection,
        Request,
        TextMessage,
    )

    listener = socket.create_server(("127.0.0.1", port), backlog=1024)

    def serve(conn: socket.socket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        parts: list[Any] = []
        with conn:
            while data := conn.recv(65550):
                ws.receive_data(data)
                out = []
                for event in ws.events():
                    if isinstance(event, Request):
                        query = urlsplit(event.target).query
                        if not check_jwt(parse_qs(query).get("token", [None])[0]):
                            conn.sendall(ws.send(RejectConnection(status_code=401)))
                            return
                        out += [ws.send(AcceptConnection()), ws.send(TextMessage(WELCOME))]
                    elif isinstance(event, (TextMessage, BytesMessage)):
                        parts.append(event.data)
                        if event.message_finished:
                            whole = parts[0] if len(parts) == 1 else type(parts[0])().join(parts)
                            parts.clear()
                            if isinstance(whole, str):
                                out.append(ws.send(TextMessage(f"You said: {whole}")))
                            else:
                                out.append(ws.send(BytesMessage(whole)))
                    elif isinstance(event, Ping):
                        out.append(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        conn.sendall(b"".join(out) + ws.send(event.response()))
                        return
                if out:
                    conn.sendall(b"".join(out))

    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


SERVERS = {
    "wsproto-alone": wsproto_alone,
    "wsauth": wsauth,
    "websockets": websockets_sync,
    "simple-websocket": simple_websocket,
    "raw-tcp": raw_tcp,
}

if os.environ.get("WSAUTH_CPROFILE"):
    profile_threads(os.environ["WSAUTH_CPROFILE"])

if __name__ == "__main__":
    SERVERS[sys.argv[1]](int(sys.argv[2]))
