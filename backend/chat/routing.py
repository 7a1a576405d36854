from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from backend.agents.consumers import AgentConsumer
from backend.chat.consumers import ChatConsumer

# Agents authenticate with their admin session cookie; the Origin check stops other pages from using it.
agent_consumer = AllowedHostsOriginValidator(AuthMiddlewareStack(AgentConsumer.as_asgi()))

websocket_urlpatterns = [
    path("ws/chat/<str:site_key>/", ChatConsumer.as_asgi()),
    path("ws/agent/inbox/", agent_consumer),
    path("ws/agent/conversations/<uuid:conversation>/", agent_consumer),
]
