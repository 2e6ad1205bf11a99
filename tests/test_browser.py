"""A real browser (Debian's headless Chromium, driven by Playwright) against the demo page.

The page is the one ``wsauth-sync echo`` serves at ``/``. Chromium runs with background
networking off, so nothing leaves 127.0.0.1. A screenshot of the demo after an echo is
kept in ``artifacts/``.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import SECRET, free_port, main_python_only, make_app, running, wait_for
from needs import require_module, require_tool

from wsauth_sync import CookieToken, QueryToken, SubprotocolToken, WebSocketServer
from wsauth_sync.echo import WELCOME, demo_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = main_python_only("Chromium")

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    sync_api = require_module("playwright.sync_api")
    executable = require_tool("chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site() -> Iterator[tuple[WebSocketServer, str]]:
    """The echo app with its demo page; its own origin is the only one allowed."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    app = make_app(
        sources=[QueryToken(), SubprotocolToken(), CookieToken()],
        allowed_origins=[origin],
        pages={"/": demo_page("/ws")},
    )
    with running(app, port=port) as server:
        yield server, origin


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def log_lines(page: Page) -> list[str]:
    return page.locator("#log li").all_inner_texts()


def connect_with(page: Page, origin: str, how: str, token: str = SECRET) -> None:
    page.goto(f"{origin}/#token={token}")
    page.check(f"input[name=how][value={how}]")
    page.click("#connect")


def test_subprotocol_form_connects_and_echoes(
    site: tuple[WebSocketServer, str], page: Page
) -> None:
    _, origin = site
    connect_with(page, origin, "subprotocol")
    page.wait_for_selector("text=open, protocol: bearer", timeout=5000)
    assert page.evaluate("socket.protocol") == "bearer"
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    page.fill("#message", "Hello from Chromium")
    page.click("#send")
    page.wait_for_selector("text=← You said: Hello from Chromium", timeout=5000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-demo.png"), full_page=True)
    assert (ARTIFACTS / "browser-demo.png").stat().st_size > 1000


def test_query_form_connects(
    site: tuple[WebSocketServer, str], page: Page, logs: pytest.LogCaptureFixture
) -> None:
    _, origin = site
    connect_with(page, origin, "query")
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    assert page.evaluate("socket.protocol") == ""
    assert wait_for(lambda: any("source=query" in r.getMessage() for r in logs.records))
    assert not any(SECRET in r.getMessage() for r in logs.records)


def test_cookie_form_with_the_allowed_origin(
    site: tuple[WebSocketServer, str], page: Page, logs: pytest.LogCaptureFixture
) -> None:
    _, origin = site
    connect_with(page, origin, "cookie")
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    assert wait_for(
        lambda: any(
            "source=cookie" in r.getMessage() and f"origin={origin}" in r.getMessage()
            for r in logs.records
        )
    )


def token_cookies(page: Page) -> list[dict[str, object]]:
    return [dict(c) for c in page.context.cookies() if c["name"] == "token"]


def test_cookie_is_scoped_to_the_socket_path_and_cleared_after_use(
    site: tuple[WebSocketServer, str], page: Page
) -> None:
    _, origin = site
    connect_with(page, origin, "cookie")
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    assert token_cookies(page) == []  # deleted once the handshake is over
    page.click("#disconnect")
    page.wait_for_selector("text=closed, code 1000", timeout=5000)
    page.fill("#token", "not-the-token")
    page.click("#connect")
    page.wait_for_selector("text=closed, code 1006", timeout=5000)
    assert token_cookies(page) == []  # and after a refusal
    page.evaluate("setTokenCookie('probe')")  # what the page sets just before connecting
    (cookie,) = token_cookies(page)
    assert (cookie["path"], cookie["sameSite"], cookie["secure"]) == ("/ws", "Strict", False)
    assert 0 < float(str(cookie["expires"])) - time.time() <= 61  # short-lived even if never used


def test_cookie_is_secure_over_https(browser: Browser, tmp_path: Path) -> None:
    import trustme

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    port = free_port()
    app = make_app(
        sources=[CookieToken()],
        allowed_origins=[f"https://127.0.0.1:{port}"],
        pages={"/": demo_page("/ws", sources=["cookie"])},
    )
    with running(app, port=port, ssl_context=context):
        browsing = browser.new_context(ignore_https_errors=True)
        try:
            page = browsing.new_page()
            connect_with(page, f"https://127.0.0.1:{port}", "cookie")
            page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
            assert token_cookies(page) == []
            page.evaluate("setTokenCookie('probe')")
            (cookie,) = token_cookies(page)
            assert (cookie["path"], cookie["sameSite"], cookie["secure"]) == ("/ws", "Strict", True)
        finally:
            browsing.close()


def test_demo_page_never_asks_for_a_favicon(
    site: tuple[WebSocketServer, str], page: Page, logs: pytest.LogCaptureFixture
) -> None:
    _, origin = site
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    connect_with(page, origin, "subprotocol")
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    assert not [url for url in requested if "favicon" in url]
    assert not [r for r in logs.records if "favicon" in r.getMessage()]


def test_wrong_token_is_refused_before_open(
    site: tuple[WebSocketServer, str], page: Page, logs: pytest.LogCaptureFixture
) -> None:
    _, origin = site
    connect_with(page, origin, "subprotocol", token="not-the-token")
    page.wait_for_selector(
        "text=closed, code 1006 (refused before the handshake completed)", timeout=5000
    )
    assert not any(line.startswith("open") for line in log_lines(page))
    assert wait_for(
        lambda: any("status=401 reason=unknown_token" in r.getMessage() for r in logs.records)
    )


ATTACK_PAGE = """<!doctype html><title>waiting</title><script>
const ws = new WebSocket("{target}");
ws.onopen = () => {{ document.title = "OPEN"; }};
ws.onclose = (event) => {{ document.title = "CLOSED " + event.code; }};
</script>"""


def test_cross_origin_page_is_refused_even_with_the_cookie(
    site: tuple[WebSocketServer, str], browser: Browser, logs: pytest.LogCaptureFixture
) -> None:
    server, _ = site
    host, port = server.address
    body = ATTACK_PAGE.format(target=f"ws://{host}:{port}/ws").encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    context = browser.new_context()
    try:
        # The victim holds a valid session cookie for the WebSocket's host.
        context.add_cookies(
            [{"name": "token", "value": SECRET, "domain": "127.0.0.1", "path": "/"}]
        )
        attack = context.new_page()
        attack.goto(f"http://127.0.0.1:{evil.server_port}/")
        attack.wait_for_function("document.title.startsWith('CLOSED')", timeout=5000)
        assert attack.title() == "CLOSED 1006"
    finally:
        context.close()
        evil.shutdown()
        thread.join(5)
        evil.server_close()
    assert wait_for(
        lambda: any("status=403 reason=origin_not_allowed" in r.getMessage() for r in logs.records)
    )


# -- refusals a browser can read, and re-authentication (README "Long-lived sessions") --

JWT_KEY = "a-jwt-secret-that-is-at-least-32-bytes!"


def jwt_token(subject: str = "alice", life: float = 3.0, **claims: object) -> str:
    import jwt

    return jwt.encode(
        {"sub": subject, "exp": time.time() + life, **claims}, JWT_KEY, algorithm="HS256"
    )


@pytest.fixture
def readable_site() -> Iterator[tuple[str, list[str]]]:
    """The demo with readable refusals on /ws, a 3 s JWT verifier; handler calls kept."""
    from wsauth_sync import JWTVerifier
    from wsauth_sync.echo import echo

    calls: list[str] = []

    def recorded(ws: object) -> None:
        calls.append("handler")
        echo(ws)  # type: ignore[arg-type]

    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    app = make_app(
        routes={"/ws": recorded},
        verifier=JWTVerifier(key=JWT_KEY, algorithms=["HS256"], leeway=0),
        sources=[QueryToken(), SubprotocolToken()],
        allowed_origins=[origin],
        pages={"/": demo_page("/ws")},
        readable_refusals={"/ws"},
    )
    with running(app, port=port):
        yield origin, calls


PROBE = """async ([url, protocols, count]) => {
  const results = [];
  for (let i = 0; i < count; i++) {
    results.push(await new Promise((resolve) => {
      const ws = new WebSocket(url, protocols);
      ws.onopen = () => ws.send("sent right after open");
      ws.onclose = (e) => resolve([e.code, e.reason]);
    }));
  }
  return results;
}"""


def test_demo_page_explains_a_readable_refusal(
    readable_site: tuple[str, list[str]], page: Page, logs: pytest.LogCaptureFixture
) -> None:
    origin, calls = readable_site
    connect_with(page, origin, "subprotocol", token="not-a-jwt")
    page.wait_for_selector(
        "text=closed, code 4401: refused: the token is not valid, log in again", timeout=5000
    )
    page.fill("#token", jwt_token(life=-60))
    page.check("input[name=how][value=query]")
    page.click("#connect")
    page.wait_for_selector(
        "text=closed, code 4401: refused: your token has expired, log in again", timeout=5000
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-readable-refusal.png"), full_page=True)
    assert calls == []
    assert wait_for(
        lambda: (
            sum(
                "status=401" in r.getMessage() and "delivered=close" in r.getMessage()
                for r in logs.records
            )
            == 2
        )
    )


def test_chromium_reads_close_codes_and_nothing_is_delivered(
    readable_site: tuple[str, list[str]], page: Page, logs: pytest.LogCaptureFixture
) -> None:
    origin, calls = readable_site
    page.goto(f"{origin}/")
    url = origin.replace("http", "ws") + "/ws"
    results = page.evaluate(PROBE, [url, ["bearer", "wrong-token"], 21])
    assert results[:20] == [[4401, "unauthorized: invalid"]] * 20
    code, reason = results[20]
    assert code == 4429 and reason.startswith("too many attempts; retry in ")
    assert calls == []  # no handler ran: the message sent after open went nowhere
    assert not any(r.getMessage().startswith("accepted") for r in logs.records)
    assert not any("wrong-token" in r.getMessage() for r in logs.records)


def test_demo_page_refreshes_its_token_and_stays_open(
    readable_site: tuple[str, list[str]], page: Page, logs: pytest.LogCaptureFixture
) -> None:
    origin, _ = readable_site
    started = time.monotonic()
    connect_with(page, origin, "subprotocol", token=jwt_token(n=1))
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    for n in (2, 3):
        page.fill("#token", jwt_token(n=n))  # what the page sends when asked
        page.wait_for_function(
            f"[...document.querySelectorAll('#log li')].filter(li => "
            f"li.textContent.includes('reauthenticated')).length === {n - 1}",
            timeout=8000,
        )
    page.fill("#token", jwt_token(n=4, life=60))  # for any later request
    while time.monotonic() - started < 4.0:  # past the first two tokens' lives
        page.wait_for_timeout(100)
    page.fill("#message", "after two refreshes")
    page.click("#send")
    page.wait_for_selector("text=← You said: after two refreshes", timeout=5000)
    assert page.evaluate("socket.readyState") == 1
    assert sum(r.getMessage().startswith("reauthenticated") for r in logs.records) >= 2
    assert not any(r.getMessage().startswith("closed") for r in logs.records)
