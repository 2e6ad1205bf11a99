"""examples/django_echo under gunicorn gthread: Django's session, then the WebSocket.

A real HTTP client logs in through Django's login view (CSRF token and all), then opens
the WebSocket with the session cookie and an allowed Origin: the handler greets the
user by name and groups. From another Origin (403), with a forged cookie (401), or
after logout (401) the upgrade is refused. API clients use a JWT on /api/ws instead.
"""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from helpers import ServerProcess, free_port, wait_for
from needs import require_installed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "django_echo"
PASSWORD = "correct horse battery staple"
JWT_SECRET = "django-echo-api-test-secret-32-bytes-long"
SETUP_USER = """
from django.contrib.auth.models import Group, User
alice = User.objects.create_user("alice", password={password!r})
alice.groups.add(Group.objects.create(name="editors"), Group.objects.create(name="staff"))
"""


@dataclass
class Site:
    process: ServerProcess
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_installed("django")
    port = free_port()
    env = {
        "DJANGO_ECHO_DB": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
        "DJANGO_ECHO_ORIGINS": f"http://127.0.0.1:{port}",
        "DJANGO_ECHO_JWT_SECRET": JWT_SECRET,
        "PYTHONPATH": f"{ROOT}",
    }
    manage = [sys.executable, "manage.py"]
    for command in (
        ["migrate", "--noinput"],
        ["shell", "-c", SETUP_USER.format(password=PASSWORD)],
    ):
        subprocess.run(
            [*manage, *command],
            cwd=PROJECT,
            check=True,
            timeout=60,
            capture_output=True,
            env={**_environ(), **env},
        )
    process = ServerProcess(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "8",
            "-b",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "-",
            "echo_site.wsgi:application",
        ],
        cwd=str(PROJECT),
        env=env,
    )
    try:
        process.expect(r"Listening at: http://127\.0\.0\.1:\d+")
        yield Site(process, port)
    finally:
        assert process.stop() == 0, process.output
    assert "Traceback" not in process.output


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


class Browser:
    """urllib with a cookie jar: Django's login form as a browser would submit it."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def get(self, path: str) -> str:
        with self.opener.open(self.site.url(path), timeout=10) as response:
            return str(response.read().decode())

    def post(self, path: str, fields: dict[str, str]) -> str:
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(self.site.url(path), data=data, timeout=10) as response:
            return str(response.read().decode())

    def log_in(self, username: str, password: str) -> str:
        form = self.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        assert token, form
        return self.post(
            "/accounts/login/",
            {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
        )

    def log_out(self) -> None:
        csrf = self.cookie("csrftoken")
        assert csrf
        self.post("/accounts/logout/", {"csrfmiddlewaretoken": csrf})


def open_ws(site: Site, session: str | None, origin: str | None) -> str:
    """The greeting on a WebSocket opened with this cookie and Origin."""
    headers = {"Cookie": f"sessionid={session}"} if session else {}
    with connect(
        site.url("/ws", "ws"),
        origin=origin,  # type: ignore[arg-type]
        additional_headers=headers,
        open_timeout=10,
    ) as ws:
        greeting = ws.recv(timeout=10)
        ws.send("from django")
        assert ws.recv(timeout=10) == "You said: from django"
        return str(greeting)


def refused(site: Site, session: str | None, origin: str | None) -> int:
    with pytest.raises(InvalidStatus) as error:
        open_ws(site, session, origin)
    return int(error.value.response.status_code)


def test_logged_in_user_is_greeted_with_name_and_groups(site: Site) -> None:
    browser = Browser(site)
    assert "Logged in as alice" in browser.log_in("alice", PASSWORD)
    session = browser.cookie("sessionid")
    assert session
    assert open_ws(site, session, site.origin) == "Hello alice (groups: editors, staff)"
    assert wait_for(
        lambda: (
            "accepted peer=127.0.0.1:" in site.process.output
            and "subject=alice source=cookie" in site.process.output
        ),
        5,
    )


def test_other_origin_missing_origin_forged_and_absent_cookies_are_refused(site: Site) -> None:
    browser = Browser(site)
    browser.log_in("alice", PASSWORD)
    session = browser.cookie("sessionid")
    assert refused(site, session, "http://evil.example") == 403
    assert refused(site, session, None) == 403
    assert refused(site, "forged" + "x" * 26, site.origin) == 401
    assert refused(site, None, site.origin) == 401
    assert open_ws(site, session, site.origin).startswith("Hello alice")  # still valid


def test_wrong_password_gives_no_session_and_logout_ends_the_cookie(site: Site) -> None:
    stranger = Browser(site)
    assert "Logged in" not in stranger.log_in("alice", "wrong password")
    assert stranger.cookie("sessionid") is None
    browser = Browser(site)
    browser.log_in("alice", PASSWORD)
    session = browser.cookie("sessionid")
    assert open_ws(site, session, site.origin).startswith("Hello alice")
    browser.log_out()
    assert "Not logged in" in browser.get("/")
    assert refused(site, session, site.origin) == 401  # the old cookie, replayed
    assert site.process.output.count("reason=no_django_session") >= 1
    assert session is not None and session not in site.process.output


def test_api_clients_use_a_jwt_on_their_own_path(site: Site) -> None:
    token = jwt.encode(
        {"sub": "report-bot", "aud": "echo-api", "groups": ["api"], "exp": int(time.time()) + 60},
        JWT_SECRET,
        algorithm="HS256",
    )
    with connect(
        site.url("/api/ws", "ws"),
        open_timeout=10,
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        assert ws.recv(timeout=10) == "Hello report-bot (groups: api)"
    with pytest.raises(InvalidStatus) as error:
        connect(site.url("/api/ws", "ws"), open_timeout=10)
    assert error.value.response.status_code == 401
    assert token not in site.process.output
