"""Settings for the example: SQLite, sessions, the auth app and its login views.

Deployment values come from the environment: ``DJANGO_ECHO_DB`` (SQLite path),
``DJANGO_SECRET_KEY``, ``DJANGO_ECHO_ORIGINS`` (the origins whose pages may open the
WebSocket, comma-separated) and ``DJANGO_ECHO_JWT_SECRET`` (HS256 key for API clients).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me-0123456789")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "echo_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
WSGI_APPLICATION = "echo_site.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_ECHO_DB", str(BASE_DIR.parent / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"wsauth_sync": {"handlers": ["console"], "level": "INFO"}},
}

# The WebSocket settings (read by echo_site.websockets).
WS_ALLOWED_ORIGINS = [
    origin.strip()
    for origin in os.environ.get("DJANGO_ECHO_ORIGINS", "http://127.0.0.1:8000").split(",")
    if origin.strip()
]
WS_JWT_SECRET = os.environ.get("DJANGO_ECHO_JWT_SECRET", "")
