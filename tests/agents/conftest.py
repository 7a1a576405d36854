"""The agents' world: Ann answers Acme, Gus answers Globex, Root is a superuser, Pat is not staff.

Ann must never see Globex's conversations, nor Gus Acme's; Root sees both; Pat sees nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client

from backend.agents.models import Assignment
from backend.asgi import application
from backend.chat.models import Conversation, Message, Visitor, hash_token

ADMIN_ORIGIN = "http://testserver"


def make_agent(username: str, first: str, last: str, *sites) -> User:
    user = User.objects.create_user(username, f"{username}@parley.test", None, first_name=first, last_name=last)
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get_or_create(name="Support agents")[0])
    for site in sites:
        Assignment.objects.create(site=site, user=user)
    return user


@pytest.fixture
def support_group(db) -> Group:
    """Transactional tests flush the group the data migration made; make it again the same way."""
    from importlib import import_module

    from django.apps import apps

    migration = import_module("backend.agents.migrations.0002_support_agents_group")
    migration.create_group(apps, None)
    return Group.objects.get(name="Support agents")


@pytest.fixture
def ann(acme, support_group) -> User:
    return make_agent("ann", "Ann", "Agent", acme)


@pytest.fixture
def gus(globex, support_group) -> User:
    return make_agent("gus", "Gus", "Globex", globex)


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@parley.test", None)


@pytest.fixture
def pat(db) -> User:
    return User.objects.create_user("pat", "pat@parley.test", None)


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def conversation_for(site, *, email: str = "", name: str = "", texts: list[tuple[str, str]] = ()) -> Conversation:
    """Make a visitor with one conversation holding (role, text) messages; assistant replies cost 0.0001."""
    visitor = Visitor.objects.create(
        site=site, token_hash=hash_token(f"t-{Visitor.objects.count()}-{site.pk}"), email=email, name=name
    )
    conversation = Conversation.objects.create(site=site, visitor=visitor)
    for index, (role, text) in enumerate(texts):
        Message.objects.create(
            conversation=conversation,
            role=role,
            text=text,
            client_id=f"c{index}" if role == "user" else None,
            provider="openai" if role == "assistant" else "",
            model="gpt-4o-mini" if role == "assistant" else "",
            input_tokens=10 if role == "assistant" else 0,
            output_tokens=5 if role == "assistant" else 0,
            cost=Decimal("0.0001") if role == "assistant" else 0,
            author="Ann Agent" if role == "agent" else "",
        )
    return conversation


@contextlib.asynccontextmanager
async def agent_socket(
    path: str, user: User | None = None, origin: str = ADMIN_ORIGIN
) -> AsyncIterator[WebsocketCommunicator]:
    """Open the agents' WebSocket with the session cookie of a logged-in user (or none), always disconnecting."""
    headers = [(b"origin", origin.encode())]
    if user is not None:
        client = await database_sync_to_async(login)(user)
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def next_event(communicator: WebsocketCommunicator, kind: str, timeout: float = 5) -> dict:
    """Return the next agent event of this kind, skipping others."""
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        if event.get("kind") == kind:
            return event
