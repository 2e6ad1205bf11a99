"""A real browser (Debian's headless Chromium, driven by Playwright) against the demo page.

The page is the one ``wsauth-sync echo`` serves at ``/``. Chromium runs with background
networking off, so nothing leaves 127.0.0.1. A screenshot of the demo after an echo is
kept in ``artifacts/``.
"""

from __future__ import annotations

import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import SECRET, free_port, main_python_only, make_app, running, wait_for
from playwright.sync_api import Browser, Page, sync_playwright

from wsauth_sync import CookieToken, QueryToken, SubprotocolToken, WebSocketServer
from wsauth_sync.echo import WELCOME, demo_page

pytestmark = main_python_only("Chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-default-apps", "--disable-extensions"]



@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is installed by tests/install-system-deps.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site() -> Iterator[tuple[WebSocketServer, str]]:
    """The echo app with its demo page; its own origin is the only one allowed."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    app = make_app(sources=[QueryToken(), SubprotocolToken(), CookieToken()],
                   allowed_origins=[origin], pages={"/": demo_page("/ws")})
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


def test_subprotocol_form_connects_and_echoes(site: tuple[WebSocketServer, str],
                                              page: Page) -> None:
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


def test_query_form_connects(site: tuple[WebSocketServer, str], page: Page,
                             logs: pytest.LogCaptureFixture) -> None:
    _, origin = site
    connect_with(page, origin, "query")
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    assert page.evaluate("socket.protocol") == ""
    assert wait_for(lambda: any("source=query" in r.getMessage() for r in logs.records))
    assert not any(SECRET in r.getMessage() for r in logs.records)


def test_cookie_form_with_the_allowed_origin(site: tuple[WebSocketServer, str], page: Page,
                                             logs: pytest.LogCaptureFixture) -> None:
    _, origin = site
    connect_with(page, origin, "cookie")
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    assert wait_for(lambda: any("source=cookie" in r.getMessage() and
                                f"origin={origin}" in r.getMessage() for r in logs.records))


def token_cookies(page: Page) -> list[dict[str, object]]:
    return [dict(c) for c in page.context.cookies() if c["name"] == "token"]


def test_cookie_is_scoped_to_the_socket_path_and_cleared_after_use(
        site: tuple[WebSocketServer, str], page: Page) -> None:
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
    assert 0 < float(cookie["expires"]) - time.time() <= 61  # short-lived even if never used


def test_cookie_is_secure_over_https(browser: Browser, tmp_path: Path) -> None:
    import trustme

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    port = free_port()
    app = make_app(sources=[CookieToken()], allowed_origins=[f"https://127.0.0.1:{port}"],
                   pages={"/": demo_page("/ws", sources=["cookie"])})
    with running(app, port=port, ssl_context=context):
        browsing = browser.new_context(ignore_https_errors=True)
        try:
            page = browsing.new_page()
            connect_with(page, f"https://127.0.0.1:{port}", "cookie")
            page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
            assert token_cookies(page) == []
            page.evaluate("setTokenCookie('probe')")
            (cookie,) = token_cookies(page)
            assert (cookie["path"], cookie["sameSite"], cookie["secure"]) == ("/ws", "Strict",
                                                                              True)
        finally:
            browsing.close()


def test_demo_page_never_asks_for_a_favicon(site: tuple[WebSocketServer, str], page: Page,
                                            logs: pytest.LogCaptureFixture) -> None:
    _, origin = site
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    connect_with(page, origin, "subprotocol")
    page.wait_for_selector(f"text=← {WELCOME}", timeout=5000)
    assert not [url for url in requested if "favicon" in url]
    assert not [r for r in logs.records if "favicon" in r.getMessage()]


def test_wrong_token_is_refused_before_open(site: tuple[WebSocketServer, str], page: Page,
                                            logs: pytest.LogCaptureFixture) -> None:
    _, origin = site
    connect_with(page, origin, "subprotocol", token="not-the-token")
    page.wait_for_selector("text=closed, code 1006 (refused before the handshake completed)",
                           timeout=5000)
    assert not any(line.startswith("open") for line in log_lines(page))
    assert wait_for(lambda: any("status=401 reason=unknown_token" in r.getMessage()
                                for r in logs.records))


ATTACK_PAGE = """<!doctype html><title>waiting</title><script>
const ws = new WebSocket("{target}");
ws.onopen = () => {{ document.title = "OPEN"; }};
ws.onclose = (event) => {{ document.title = "CLOSED " + event.code; }};
</script>"""


def test_cross_origin_page_is_refused_even_with_the_cookie(
        site: tuple[WebSocketServer, str], browser: Browser,
        logs: pytest.LogCaptureFixture) -> None:
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
        context.add_cookies([{"name": "token", "value": SECRET, "domain": "127.0.0.1",
                              "path": "/"}])
        attack = context.new_page()
        attack.goto(f"http://127.0.0.1:{evil.server_port}/")
        attack.wait_for_function("document.title.startsWith('CLOSED')", timeout=5000)
        assert attack.title() == "CLOSED 1006"
    finally:
        context.close()
        evil.shutdown()
        thread.join(5)
    assert wait_for(lambda: any("status=403 reason=origin_not_allowed" in r.getMessage()
                                for r in logs.records))
