"""No token reaches a host server's log, whatever the query around it holds.

Each host server of the README's table runs as a process (gunicorn also under the
``%(r)s``, ``%(U)s?%(q)s`` and ``%(q)s`` access-log formats). Over raw loopback sockets
it gets a bounded set of hostile queries carrying a token: quotes raw and
percent-encoded, encoded names, the parameter twice, upper-case names, ``;``, ``+``,
fragments, an encoded ``&``, control characters. Each goes as an upgrade (accepted or
refused) and as a plain GET (426), and every line the process wrote is searched for the
token in every spelling. The lines must still show the requests, so the test cannot
pass by logging nothing.
"""

from __future__ import annotations

import io
import logging
import logging.config
import re
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import unquote_plus

import pytest
from helpers import (
    SECRET,
    ServerProcess,
    frame,
    handshake_bytes,
    read_head,
    secret_forms,
    wait_for,
)
from test_wsgi import HOSTS, Host

from wsauth_sync.core.audit import HOST_ACCESS_LOGGERS, install_log_redaction, redact_text
from wsauth_sync.core.request import redact_query

ROOT = Path(__file__).resolve().parent.parent
#: A well-formed token no verifier knows: refused with 401, and still never logged.
REFUSED = "r3fused-TOKEN-value_77"

#: Queries around a token; ``{token}`` is the token, ``{n}`` a marker naming the case.
QUERIES = [
    "n={n}&token={token}",
    "n={n}&name=a%22b&token={token}",
    'n={n}&name=a"b&token={token}',
    "n={n}&name=a'b&token={token}",
    "n={n}&name=a%27b%3Cc%3Ed%20e&token={token}",
    "n={n}&name=<b>&token={token}",
    "n={n}&name=a%5C%22&token={token}",
    "n={n}&%74oken={token}",
    "n={n}&%74%6F%6B%65%6E={token}",
    "n={n}&token=%73%33cret%2DTOKEN%2Dvalue_42",  # the value percent-encoded
    "n={n}&token={token}&token={token}",
    "n={n}&TOKEN={token}",
    "n={n}&Access_Token={token}",
    "n={n};token={token}",
    "n={n}&a=b+c&token={token}+",
    "n={n}&token+={token}",
    "n={n}&token={token}%22",
    "n={n}&token={token}#frag",
    "n={n}&a=1#&token={token}",
    "n={n}&name=x%26token%3D{token}",
    "n={n}&name=x%26token={token}",
    "n={n}&redirect=%2Fws%3Ftoken%3D{token}",
    "n={n}&a=%0D%0Atoken={token}",
    "n={n}&a=%0AGET%20/x%20HTTP/1.1%0A&token={token}",
    "n={n}&name=%C3%A9&token={token}",
    # Raw spaces: most hosts refuse the request line, some quoting parts of it.
    "n={n}&a=b c&token={token}",
    "n={n}&token= {token}",
]
#: Cases some hosts refuse before any access-log line (gunicorn: an error line only).
HOST_REFUSED = {len(QUERIES) - 2, len(QUERIES) - 1}
#: The case whose token sits after a "#": gunicorn's QUERY_STRING (``%(q)s``) drops it.
FRAGMENT = QUERIES.index("n={n}&a=1#&token={token}")


@dataclass(frozen=True)
class LogSpec:
    """A host server and what its access lines show."""

    host: Host
    #: The host writes a line per request (cheroot writes none).
    access_lines: bool = True
    #: The host logs requests it hands to the WebSocket route (http.server's example
    #: answers them through handle_request, outside its own logging).
    logs_ws_route: bool = True
    #: Access lines show the path.
    shows_path: bool = True
    #: Access lines show the query without its fragment.
    drops_fragment: bool = False


def _gunicorn(name: str, log_format: str) -> Host:
    return Host(
        name,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "8",
            "-b",
            "127.0.0.1:0",
            "--access-logfile",
            "-",
            "--access-logformat",
            log_format,
            "examples.wsgi_echo:app",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    )


_BY_NAME = {host.name: host for host in HOSTS}
SPECS = [
    LogSpec(_BY_NAME["werkzeug"]),
    LogSpec(_BY_NAME["flask"]),
    LogSpec(_BY_NAME["gunicorn-gthread"]),
    LogSpec(_BY_NAME["gunicorn-sync"]),
    LogSpec(_BY_NAME["cheroot"], access_lines=False),
    LogSpec(_BY_NAME["http.server"], logs_ws_route=False),
    LogSpec(_gunicorn("gunicorn-r", '%(h)s "%(r)s" %(s)s')),
    LogSpec(_gunicorn("gunicorn-U?q", "%(h)s %(m)s %(U)s?%(q)s %(s)s"), drops_fragment=True),
    LogSpec(_gunicorn("gunicorn-q", "%(s)s %(q)s"), shows_path=False, drops_fragment=True),
]


class DrainedProcess(ServerProcess):
    """A ServerProcess that can tell when both output pipes have reached their end."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._ended = 0
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _pump(self, stream: IO[str]) -> None:
        super()._pump(stream)
        with self._lock:
            self._ended += 1

    def drained(self) -> bool:
        with self._lock:
            return self._ended == 2


@dataclass
class Outcome:
    spec: LogSpec
    lines: list[str]
    #: marker -> status the client saw (0: no HTTP answer).
    statuses: dict[str, int] = field(default_factory=dict)


def _status(sock: socket.socket) -> tuple[int, bytes]:
    head = read_head(sock)  # nothing past the head is consumed
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(match.group(1)) if match else 0), head


def _send(port: int, request: bytes, source: str) -> int:
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(source, 0)
    ) as sock:
        sock.sendall(request)
        try:
            status, _ = _status(sock)
            if status == 101:  # close the WebSocket cleanly: the host logs its end
                sock.sendall(frame(0x8, b"\x03\xe8"))
                while sock.recv(4096):
                    pass
        except (ConnectionError, socket.timeout):
            return 0
    return status


def _upgrade(target: str, token: str) -> bytes:
    return handshake_bytes(target)


def _plain_get(target: str, token: str) -> bytes:
    # gunicorn's default format logs Referer and User-Agent too: both carry the token.
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Referer: http://app.example/page?x=1&token={token}\r\n"
        f"User-Agent: probe/1 (+http://app.example/?Token={token})\r\n\r\n"
    ).encode("latin-1")


def _requests() -> Iterator[tuple[str, bytes, str]]:
    """(marker, request, source address) for every case: upgrade, refused upgrade,
    plain GET, page. Each case comes from its own loopback address, so the failed-auth
    limiter (20 per address) never answers 429 in place of the host's usual answer."""
    kinds = [
        ("u", SECRET, "/ws", _upgrade),
        ("r", REFUSED, "/ws", _upgrade),
        ("g", SECRET, "/ws", _plain_get),
        ("p", SECRET, "/", _plain_get),
    ]
    for number, query in enumerate(QUERIES):
        for kind, token, path, build in kinds:
            marker = f"c{number:02d}{kind}"
            target = f"{path}?" + query.format(n=marker, token=token)
            yield marker, build(target, token), _source(marker)


def _source(marker: str) -> str:
    return f"127.0.0.{2 + int(marker[1:3])}"


@pytest.fixture(scope="module", params=SPECS, ids=[spec.host.name for spec in SPECS])
def outcome(request: pytest.FixtureRequest) -> Outcome:
    spec: LogSpec = request.param
    process = DrainedProcess(
        spec.host.command, cwd=str(ROOT), env={"WSAUTH_TOKENS": SECRET, "PORT": "0"}
    )
    result = Outcome(spec, process.lines)
    try:
        port = int(process.expect(spec.host.ready).group(1))
        for marker, data, source in _requests():
            result.statuses[marker] = _send(port, data, source)
    finally:
        code = process.stop()
    assert wait_for(process.drained, 10), "the server's output did not end"
    assert code == 0, process.output
    return result


def _leaks(line: str) -> list[str]:
    decoded = line
    for _ in range(3):  # whatever percent-encoding the client or the host applied
        decoded = unquote_plus(decoded)
    forms = [*secret_forms(SECRET), *secret_forms(REFUSED)]
    return [form for form in forms if form in line or form in decoded]


def test_no_token_in_any_host_line(outcome: Outcome) -> None:
    leaked = [line for line in outcome.lines if _leaks(line)]
    assert not leaked, "\n".join(leaked)


def test_requests_reached_every_outcome(outcome: Outcome) -> None:
    statuses = outcome.statuses
    assert statuses["c01u"] == 101  # name=a%22b&token=...: accepted
    assert statuses["c01r"] == 401
    assert statuses["c01g"] == 426
    assert statuses["c01p"] == 200
    assert statuses["c10u"] == 400  # the token twice
    assert {101, 400, 401, 426, 200} <= set(statuses.values())


def _logged(outcome: Outcome, marker: str) -> list[str]:
    pattern = re.compile(rf"\bn={marker}(?![0-9a-z])")
    return [line for line in outcome.lines if pattern.search(line)]


def test_host_lines_still_show_each_request(outcome: Outcome) -> None:
    spec = outcome.spec
    if not spec.access_lines:
        # No access log: our own decision lines are the record of each request that
        # reached the middleware (cheroot answers some targets with its own 400).
        for marker, status in outcome.statuses.items():
            if marker.endswith("p") or status not in (101, 401, 426):
                continue
            assert any(
                f" peer={_source(marker)}:" in line and " path=/ws" in line
                for line in outcome.lines
            ), marker
        return
    kinds = "rgp" if spec.logs_ws_route else "p"
    missing = []
    for marker, status in outcome.statuses.items():
        case = int(marker[1:3])
        if marker[-1] not in kinds or status not in (200, 400, 401, 426):
            continue
        if case in HOST_REFUSED:  # the host's own error line, if not an access line
            lines = [
                line
                for line in outcome.lines
                if f"n={marker}" in line or f"ip={_source(marker)}:" in line
            ]
        else:
            lines = _logged(outcome, marker)
        needs_mark = not (case == FRAGMENT and spec.drops_fragment)
        if not any(
            ("[REDACTED]" in line or not needs_mark) and (not spec.shows_path or "/" in line)
            for line in lines
        ):
            missing.append((marker, status, lines))
    assert not missing, missing


# -- where the filter sits: loggers configured after it, several apps --------------------


@pytest.fixture
def host_loggers() -> Iterator[None]:
    """Give the host loggers back their filters, handlers and flags after the test."""
    saved = {
        name: (log.filters[:], log.handlers[:], log.level, log.propagate, log.disabled)
        for name in HOST_ACCESS_LOGGERS
        for log in [logging.getLogger(name)]
    }
    yield
    for name, (filters, handlers, level, propagate, disabled) in saved.items():
        log = logging.getLogger(name)
        log.filters[:], log.handlers[:] = filters, handlers
        log.level, log.propagate, log.disabled = level, propagate, disabled


def _configure_later(stream: io.StringIO) -> None:
    # What a host (or the application) does after the middleware exists: new handlers,
    # new formats, through the standard configuration call.
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"out": {"class": "logging.StreamHandler", "stream": stream}},
            "loggers": {
                name: {"handlers": ["out"], "level": "INFO", "propagate": False}
                for name in HOST_ACCESS_LOGGERS
            },
        }
    )


def test_redaction_holds_when_the_host_configures_its_loggers_later(host_loggers: None) -> None:
    from gunicorn.glogging import SafeAtoms  # type: ignore[import-untyped]
    from helpers import make_app

    from wsauth_sync import QueryToken
    from wsauth_sync.wsgi import WebSocketMiddleware

    WebSocketMiddleware(lambda environ, start: [], make_app(sources=[QueryToken(param="Key")]))
    out = io.StringIO()
    _configure_later(out)
    query = f'n=1&name=a"b&KEY={SECRET};Token={SECRET}'
    atoms = SafeAtoms(
        {
            "r": f"GET /ws?{query} HTTP/1.1",
            "q": query,
            "U": "/ws",
            "s": "401",
            "{cookie}i": f"token={SECRET}",
            "a": f"agent?token={SECRET}",
        }
    )
    logging.getLogger("gunicorn.access").info(
        '"%(r)s" %(U)s?%(q)s %(q)s %(s)s %({cookie}i)s %(a)s %(missing)s', atoms
    )
    logging.getLogger("werkzeug").info('"%s" %s', f"GET /ws?{query} HTTP/1.1", 401)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert not [line for line in lines if _leaks(line)], lines
    assert lines[0].startswith('"GET /ws?n=1&name=a\\"b&KEY=[REDACTED];Token=[REDACTED] ')
    assert lines[0].endswith(" 401 [REDACTED] agent?token=[REDACTED] -")
    assert lines[1] == '"GET /ws?n=1&name=a"b&KEY=[REDACTED];Token=[REDACTED] HTTP/1.1" 401'


def test_a_second_app_keeps_the_first_apps_parameter_redacted(host_loggers: None) -> None:
    install_log_redaction(params=["first"])
    install_log_redaction(params=["second"])
    out = io.StringIO()
    _configure_later(out)
    logging.getLogger("werkzeug").info("%s", f"GET /ws?First={SECRET}&second={SECRET} HTTP/1.1")
    assert out.getvalue().strip() == "GET /ws?First=[REDACTED]&second=[REDACTED] HTTP/1.1"


# -- the parser itself: one table, as a reader would check it ----------------------------

REDACT_QUERY_CASES = [
    ("/ws?token=S&room=1", "/ws?token=[REDACTED]&room=1"),
    ("/ws?a=1;TOKEN=S&b=2", "/ws?a=1;TOKEN=[REDACTED]&b=2"),
    ("/ws?Access_Token=S", "/ws?Access_Token=[REDACTED]"),
    ("/ws?%74oken=S", "/ws?%74oken=[REDACTED]"),
    ("/ws?token+=S", "/ws?token+=[REDACTED]"),
    ("/ws?token[]=S", "/ws?token[]=[REDACTED]"),
    ("/ws?name=x%26token%3DS", "/ws?name=[REDACTED]"),  # a value that assigns a token
    ("/ws?next=%2Fws%3Ftoken%3DS", "/ws?next=[REDACTED]"),
    ("/ws?a%26token%3DS=1", "/ws?[REDACTED]"),  # the name itself hides one
    ("/ws?%25252574oken=S", "/ws?[REDACTED]"),  # still encoded after 4 decodings
    ("/ws#token=S", "/ws#token=[REDACTED]"),
    ("/ws?a=b c&token= S x", "/ws?a=b c&token=[REDACTED]"),
    ("/ws?room=1&t=2&mytoken=3", "/ws?room=1&t=2&mytoken=3"),  # nothing to hide
    ("/ws", "/ws"),
]


@pytest.mark.parametrize(("target", "expected"), REDACT_QUERY_CASES)
def test_redact_query_parses_names_as_a_parser_would(target: str, expected: str) -> None:
    assert redact_query(target, ["token", "access_token"]) == expected


REDACT_TEXT_CASES = [
    (
        '1.2.3.4 - - "\x1b[31mGET /ws?name=a"b&token=S HTTP/1.1\x1b[0m" 401 -',
        '1.2.3.4 - - "\x1b[31mGET /ws?name=a"b&token=[REDACTED] HTTP/1.1\x1b[0m" 401 -',
    ),
    (
        "Bad request syntax ('GET /ws?a=b c&token=S HTTP/1.1')",
        "Bad request syntax ('GET /ws?a=b c&token=[REDACTED] HTTP/1.1')",
    ),
    ("Invalid HTTP Version: 'S HTTP/1.1'", "Invalid HTTP Version: '[REDACTED] HTTP/1.1'"),
    ('401 "name=a\\"b&TOKEN=S"', '401 "name=a\\"b&TOKEN=[REDACTED]"'),
    ("x token= S y", "x token=[REDACTED] [REDACTED] y"),
    ('"GET /ws HTTP/1.1" 200 17 "-" "curl/8"', '"GET /ws HTTP/1.1" 200 17 "-" "curl/8"'),
]


@pytest.mark.parametrize(("text", "expected"), REDACT_TEXT_CASES)
def test_redact_text_finds_tokens_in_unstructured_lines(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # a second filter on the way changes nothing
