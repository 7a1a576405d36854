"""ASGI entry point: HTTP goes to Django, WebSockets to the chat consumers."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (Django must be set up first)

from backend.chat.routing import websocket_urlpatterns  # noqa: E402
from backend.tickets.asgi import BodyLimit  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodyLimit(django_asgi_app),
        # Each consumer checks the Origin itself: allowed origins differ per site.
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
