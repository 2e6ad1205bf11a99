"""The WebSocket side: who may connect, and what the handler says.

Browsers connect to ``/ws`` with the session cookie Django's login view set. A cookie
travels with cross-site requests too, so the Origin allowlist is what proves the page
is ours (RFC 6455 §10.2); :class:`DjangoSessionVerifier` then finds the logged-in user
through Django's own session engine and auth, as a view would. API clients without a
session connect to ``/api/ws`` with ``Authorization: Bearer <JWT>``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django import db
from django.conf import settings
from django.contrib import auth

from wsauth_sync import (
    BearerToken,
    CookieToken,
    Identity,
    InvalidToken,
    JWTVerifier,
    WebSocket,
    WebSocketApp,
)


class _SessionOnly:
    """The one attribute ``django.contrib.auth.get_user`` reads from a request."""

    def __init__(self, session: Any) -> None:
        self.session = session


class DjangoSessionVerifier:
    """Turn a session key into the logged-in Django user, or refuse it (401).

    Runs on wsauth_sync's verifier threads (a database read, bounded by
    ``verify_timeout``): each call closes the thread's database connection
    afterwards, as Django does at the end of a request.
    """

    def __call__(self, session_key: str) -> Identity:
        db.close_old_connections()
        try:
            engine = import_module(settings.SESSION_ENGINE)
            session = engine.SessionStore(session_key=session_key)
            # get_user checks the session's auth hash too: a session from before a
            # password change, or after logout (deleted), yields AnonymousUser.
            user = auth.get_user(_SessionOnly(session))  # type: ignore[arg-type]
            if not user.is_authenticated or not user.is_active:
                raise InvalidToken("no_django_session")
            groups = sorted(user.groups.values_list("name", flat=True))
            return Identity(
                subject=user.get_username(),
                claims={"groups": groups, "user_id": user.pk},
                expires_at=session.get_expiry_date().timestamp(),
            )
        finally:
            db.connections.close_all()


def greet(ws: WebSocket) -> None:
    """Greet the user by name and groups, then echo."""
    groups = ", ".join(ws.identity.claims.get("groups", [])) or "none"
    ws.send(f"Hello {ws.identity.subject} (groups: {groups})")
    for message in ws:
        ws.send(f"You said: {message}" if isinstance(message, str) else message)


def browser_websockets() -> WebSocketApp:
    """``/ws``: the session cookie, from an allowed Origin only."""
    return WebSocketApp(
        {"/ws": greet},
        verifier=DjangoSessionVerifier(),
        sources=[CookieToken(cookie=settings.SESSION_COOKIE_NAME)],
        allowed_origins=settings.WS_ALLOWED_ORIGINS,
    )


def api_websockets() -> WebSocketApp:
    """``/api/ws``: a JWT in ``Authorization: Bearer`` (HS256, audience ``echo-api``)."""
    return WebSocketApp(
        {"/api/ws": greet},
        verifier=JWTVerifier(key=settings.WS_JWT_SECRET, algorithms=["HS256"], audience="echo-api"),
        sources=[BearerToken()],
    )
