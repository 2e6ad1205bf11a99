"""The WSGI middleware inside real uWSGI (``--http-socket``), threaded and with ``--gevent``.

uWSGI offers no socket in the environ; the middleware takes the request's descriptor
(``uwsgi.connection_fd()``) and has uWSGI write the 101 itself, so uWSGI logs the
request as 101 and writes nothing after the WebSocket. ``--gevent`` without monkey
patching would stall the whole worker: it is refused with 501 and an ERROR line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    SECRET,
    free_port,
    handshake_bytes,
    main_python_only,
    parse_response,
    wait_for,
)
from needs import TEST_EXTRA, require_installed, require_tool
from test_async_workers import (
    TESTS,
    Served,
    check_echo_and_refusals,
    check_many_open_websockets,
    check_nothing_after_the_close,
    check_timers,
    serve,
)

pytestmark = main_python_only("uWSGI (built from source)")
ROOT = Path(__file__).resolve().parent.parent


def uwsgi_command(*mode: str) -> list[str]:
    # The test extra installs uwsgi next to this interpreter, which may not be on PATH.
    binary = require_tool(
        "uwsgi", TEST_EXTRA, candidates=(str(Path(sys.executable).parent / "uwsgi"),)
    )
    # --need-app: exit rather than serve 500s when the app fails to import;
    # --die-on-term: SIGTERM stops uWSGI (its default is to reload); the request log
    # leaves out %(uri), which would show ?token= values (README).
    return [
        binary,
        "--http-socket",
        f"127.0.0.1:{free_port()}",
        *mode,
        "--master",
        "--need-app",
        "--die-on-term",
        "--logformat",
        LOG_FORMAT,
        "--pythonpath",
        str(TESTS),
        "--module",
        "green_app:application",
    ]


LOG_FORMAT = "uwsgi request %(method) %(status) %(msecs)ms"


READY = r"bound to TCP address 127\.0\.0\.1:(\d+)"
MODES = {
    "threads": ("--threads", "8"),
    "gevent": ("--gevent", "300", "--gevent-early-monkey-patch"),
}


#: Tests that hold for both modes; a test of one mode names only that one.
EVERY_MODE = pytest.mark.parametrize(
    "uwsgi", list(MODES), indirect=True, ids=[f"uwsgi-{m}" for m in MODES]
)


@pytest.fixture(scope="module")
def uwsgi(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    if request.param == "gevent":
        require_installed("gevent")
    keys_db = str(tmp_path_factory.mktemp("keys") / "keys.db")
    served = serve(uwsgi_command(*MODES[request.param]), READY, keys_db)
    running = next(served)
    assert running.process.expect(r"spawned uWSGI worker 1 ", timeout=30)
    yield running
    next(served, None)


@EVERY_MODE
def test_echo_refusals_and_plain_http(uwsgi: Served) -> None:
    check_echo_and_refusals(uwsgi)


@EVERY_MODE
def test_uwsgi_logs_the_101_and_writes_nothing_after_it(uwsgi: Served) -> None:
    check_nothing_after_the_close(uwsgi)
    assert wait_for(lambda: "uwsgi request GET 101 " in uwsgi.process.output, 5)
    assert "Broken pipe" not in uwsgi.process.output


@EVERY_MODE
def test_keepalive_expiry_and_revocation_fire_on_time(uwsgi: Served) -> None:
    check_timers(uwsgi)


# Threaded, each open WebSocket holds one of the 8 threads (README): only gevent's worker
# can hold 200 of them.
@pytest.mark.parametrize("uwsgi", ["gevent"], indirect=True, ids=["uwsgi-gevent"])
def test_gevent_worker_holds_200_websockets_while_http_is_served(uwsgi: Served) -> None:
    check_many_open_websockets(uwsgi)


def test_gevent_without_monkey_patching_is_refused_with_501(tmp_path: Path) -> None:
    require_installed("gevent")
    served = serve(uwsgi_command("--gevent", "10"), READY, str(tmp_path / "keys.db"))
    running = next(served)
    running.process.expect(r"spawned uWSGI worker 1 ", timeout=30)
    import socket

    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={SECRET}"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, _, body = parse_response(data)
    assert (status, body) == (501, b"501 Not Implemented\n")
    assert wait_for(lambda: "not monkey-patched" in running.process.output, 5)
    assert "--gevent-early-monkey-patch" in running.process.output
    next(served, None)
