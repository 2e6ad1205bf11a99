"""docs/handshake.md tells the truth: its bytes are the server's, its order the code's.

The request block is sent to a real server on 127.0.0.1 built from the page's own
configuration block, and the answers are compared byte for byte with the page's response
blocks. The order in which the page walks through the checks is compared with the order
in which the code runs them, and with the order the core's docstrings give.
"""

from __future__ import annotations

import ast
import inspect
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import read_frames, read_head, read_until_closed, running, wait_for

from wsauth_sync import WebSocketApp, WebSocketServer
from wsauth_sync.core import checks, policy

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "handshake.md").read_text()
TOKEN_ENTRY = "Sec-WebSocket-Protocol: bearer, demo-token-42\n"


def fenced(info: str) -> str:
    """The text of the one fenced block whose info string is ``info``."""
    (text,) = re.findall(rf"^```{re.escape(info)}\n(.*?)^```$", PAGE, flags=re.M | re.S)
    return str(text)


def as_bytes(block: str) -> bytes:
    """A block as HTTP bytes: head lines end in CRLF, a blank line, then the body as is."""
    head, _, body = block.partition("\n\n")
    return (head.replace("\n", "\r\n") + "\r\n\r\n" + body).encode("latin-1")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", PAGE, flags=re.M | re.S)


@pytest.fixture(scope="module")
def server() -> Iterator[WebSocketServer]:
    """The server configured by the page's first Python block."""
    namespace: dict[str, object] = {}
    exec(python_blocks()[0], namespace)  # the page's own configuration
    app = namespace["app"]
    assert isinstance(app, WebSocketApp)
    with running(app) as srv:
        yield srv


def send(server: WebSocketServer, request: str, *, until_closed: bool = True) -> bytes:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(as_bytes(request))
        if until_closed:
            return read_until_closed(sock, timeout=5)
        head = read_head(sock)
        (frame,) = read_frames(sock, 1)  # the welcome, to compare with the page's bytes
        return head + bytes([0x80 | frame[0], len(frame[1])]) + frame[1]


def test_the_page_computes_the_rfc_accept_value() -> None:
    exec(python_blocks()[1], {})  # the block asserts its own result


def test_the_browser_request_gets_the_101_shown_then_the_welcome_frame(
    server: WebSocketServer, logs: pytest.LogCaptureFixture
) -> None:
    expected = as_bytes(fenced("http response-101"))
    answer = send(server, fenced("http request"), until_closed=False)
    assert answer[: len(expected)] == expected
    # A final text frame of 31 bytes, unmasked: "81 1f" and the greeting, as the page says.
    assert answer[len(expected) :] == b"\x81\x1fWelcome! You are authenticated."
    assert "81 1f" in PAGE and "`Welcome! You are authenticated.`" in PAGE


def logged_as_shown(logs: pytest.LogCaptureFixture, prefix: str) -> None:
    """The page's log line starting with ``prefix`` (``...`` for the peer) was written."""
    (shown,) = re.findall(rf"`({prefix} [^`]+)`", PAGE)
    pattern = re.escape(shown).replace(re.escape("..."), r"127\.0\.0\.1:\d+")
    messages = [r.getMessage() for r in logs.records if r.name == "wsauth_sync"]
    assert any(re.fullmatch(pattern, m) for m in messages), (shown, messages)


def test_a_wrong_token_gets_the_401_shown(
    server: WebSocketServer, logs: pytest.LogCaptureFixture
) -> None:
    request = fenced("http request").replace("demo-token-42", "wrong-token")
    assert send(server, request) == as_bytes(fenced("http response-401-wrong-token"))
    logged_as_shown(logs, "rejected")


def test_no_token_gets_the_bare_challenge_shown(server: WebSocketServer) -> None:
    request = fenced("http request")
    assert TOKEN_ENTRY in request
    answer = send(server, request.replace(TOKEN_ENTRY, ""))
    assert answer == as_bytes(fenced("http response-401-no-token"))


def test_the_accepted_log_line_is_the_one_shown(
    server: WebSocketServer, logs: pytest.LogCaptureFixture
) -> None:
    send(server, fenced("http request"), until_closed=False)
    assert wait_for(lambda: any(r.getMessage().startswith("accepted ") for r in logs.records))
    logged_as_shown(logs, "accepted")


# -- the order of the checks ----------------------------------------------------------------


def raised_reasons(function: object) -> list[str]:
    """The reason codes a function raises, in source order."""
    tree = ast.parse(inspect.getsource(function))  # type: ignore[arg-type]
    raises = sorted(
        (node for node in ast.walk(tree) if isinstance(node, ast.Raise)),
        key=lambda node: (node.lineno, node.col_offset),
    )
    return [
        str(node.exc.args[0].value)
        for node in raises
        if isinstance(node.exc, ast.Call)
        and node.exc.args
        and isinstance(node.exc.args[0], ast.Constant)
    ]


def test_the_upgrade_checks_are_listed_in_the_order_check_upgrade_runs_them() -> None:
    section = PAGE.split("### 2. ", 1)[1].split("\n### ", 1)[0]
    listed = [
        reason
        for row in section.splitlines()
        if row.startswith("| item") or row.startswith("| (a GET")
        for reason in re.findall(r"`([a-z_]+)`", row.rsplit("|", 2)[1])
    ]
    assert listed == raised_reasons(checks.check_upgrade)


#: Each step of the policy: what marks it in the code, and in the policy's docstring.
STEPS = [
    ("check_upgrade(", "opening handshake"),
    ("check_origin(", "Origin"),
    ("limiter.check(", "failed-authentication budget"),
    ("find_token(", "one token"),
    ("_select_subprotocol(", "subprotocol"),
    ("max_token_length", "size bound"),
    ("_verify(", "verifier"),
    ("required_scopes", "scope"),
]


def test_the_policy_docstring_gives_the_order_of_the_code() -> None:
    code = inspect.getsource(policy.HandshakePolicy.decide) + inspect.getsource(
        policy.HandshakePolicy._authenticate
    )
    code = code.split('"""', 2)[2]  # after decide's own docstring
    in_code = [code.index(marker) for marker, _ in STEPS]
    assert in_code == sorted(in_code), "STEPS lists the code's order"
    numbered = re.findall(r"^(\d)\. (.+?)(?=^\d\. |^\n)", policy.__doc__ or "", flags=re.M | re.S)
    assert [int(n) for n, _ in numbered] == list(range(1, len(numbered) + 1))
    positions = []
    for _, words in STEPS:
        (index,) = [i for i, (_, text) in enumerate(numbered) if words in text]
        positions.append(index)
    assert positions == sorted(positions), numbered


def test_the_page_walks_the_steps_in_the_order_of_the_code() -> None:
    headings = re.findall(r"^### \d\. .*$", PAGE, flags=re.M)
    order = [
        "head",
        "WebSocket opening handshake",
        "Origin",
        "budget",
        "token source",
        "subprotocol",
        "verifier",
        "Admission",
    ]
    assert [next(i for i, h in enumerate(headings) if word in h) for word in order] == list(
        range(len(order))
    )


#: Modules that import an optional server: their names are not looked up here.
OPTIONAL = {"cheroot_gateway", "gevent_gateway", "eventlet_gateway"}


def test_every_place_the_page_names_exists() -> None:
    import importlib

    files = {p.stem: p for p in (ROOT / "wsauth_sync").rglob("*.py")}
    for name in set(re.findall(r"\b(\w+)\.py\b", PAGE)) - {"test_docs", "test_browser"}:
        assert name in files, name
    names: dict[str, object] = {}
    for stem, path in files.items():
        if stem in OPTIONAL or stem.startswith("__"):
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        loaded = importlib.import_module(module)
        names[stem] = loaded
        names.update({k: v for k, v in vars(loaded).items() if isinstance(v, type)})
    for owner, attribute in set(re.findall(r"`(\w+)\.(\w+)`", PAGE)):
        if attribute == "py" or not (owner in files or owner[0].isupper()):
            continue  # a file name, or another library's module (http.server)
        assert owner in names and hasattr(names[owner], attribute), f"{owner}.{attribute}"
