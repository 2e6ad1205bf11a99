"""The WSGI application: Django, with its WebSocket routes served by wsauth_sync.

Run it with gunicorn's threaded worker (each open WebSocket holds one thread)::

    DJANGO_ECHO_ORIGINS=https://app.example.com gunicorn -k gthread --threads 32 \\
        --chdir examples/django_echo echo_site.wsgi:application
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echo_site.settings")
django_application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - after Django's set-up

from wsauth_sync.wsgi import WebSocketMiddleware  # noqa: E402

from .websockets import api_websockets, browser_websockets  # noqa: E402

# Browsers at /ws with the session cookie; API clients at /api/ws with a JWT.
application = WebSocketMiddleware(django_application, browser_websockets())
if settings.WS_JWT_SECRET:
    application = WebSocketMiddleware(application, api_websockets())
