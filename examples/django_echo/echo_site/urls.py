"""Django's login and logout views, and a home page that names the user."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return HttpResponse(
            f"Logged in as {request.user.get_username()}. WebSocket: /ws\n",
            content_type="text/plain",
        )
    return HttpResponse("Not logged in: /accounts/login/\n", content_type="text/plain")


urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("", home),
]
