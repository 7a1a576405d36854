"""The rows each reply writes are stored exactly as Model.save would store them (backend/ops/inserts.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.db.models.signals import post_save, pre_save

from backend.chat.models import Conversation, Message, Visitor, hash_token, new_visitor_token
from backend.ops.inserts import insert
from backend.quotas.models import UsageRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(acme) -> Conversation:
    visitor = Visitor.objects.create(site=acme, token_hash=hash_token(new_visitor_token()))
    return Conversation.objects.create(site=acme, visitor=visitor)


def stored(model, pk) -> dict:
    row = model.objects.filter(pk=pk).values().get()
    row.pop("id")
    return row


def reply(conversation: Conversation, question: Message) -> Message:
    return Message(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        text="Ihre Bestellung ist unterwegs — 日本",
        status=Message.Status.STOPPED,
        created=dt.datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=dt.UTC),
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=812,
        output_tokens=41,
        usage_estimated=True,
        cost=Decimal("0.000146"),
        attempts=2,
        latency_ms=1234,
        first_token_ms=None,
        sources=[{"title": "Shipping", "url": "https://acme.example/shipping"}],
    )


def test_a_reply_is_stored_exactly_as_save_stores_it(conversation):
    question = Message(conversation=conversation, role=Message.Role.USER, text="Wo ist sie?", client_id="c1")
    insert(question)
    saved, inserted = reply(conversation, question), reply(conversation, question)
    saved.save(force_insert=True)
    insert(inserted)
    assert stored(Message, inserted.pk) == stored(Message, saved.pk)
    assert stored(Message, question.pk)["client_id"] == "c1"
    assert Message.objects.get(pk=inserted.pk).sources[0]["title"] == "Shipping"


def test_a_usage_row_gets_its_generated_key_and_is_stored_as_save_stores_it(conversation, acme):
    values = {
        "site": acme,
        "conversation": conversation,
        "day": dt.date(2026, 11, 26),
        "provider": "anthropic",
        "model": "claude",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost": Decimal("1.5"),
        "status": "complete",
    }
    saved, inserted = UsageRecord(**values, hold=uuid.uuid4()), UsageRecord(**values, hold=uuid.uuid4())
    saved.save(force_insert=True)
    insert(inserted)
    assert inserted.pk is not None and inserted.pk != saved.pk
    unlike = {"created": None, "hold": None}  # their own: each row's creation time and reservation
    assert stored(UsageRecord, inserted.pk) | unlike == stored(UsageRecord, saved.pk) | unlike
    assert stored(UsageRecord, inserted.pk)["hold"] == inserted.hold
    # Stored, the object behaves as a saved one: saving it again updates its row.
    inserted.output_tokens = 21
    inserted.save()
    assert UsageRecord.objects.count() == 2 and UsageRecord.objects.get(pk=inserted.pk).output_tokens == 21


def test_many_inserts_on_one_connection_keep_working(conversation):
    # On PostgreSQL the statement is prepared after its first runs; the later ones must store the same.
    for number in range(6):
        insert(Message(conversation=conversation, role=Message.Role.USER, text=f"m{number}", client_id=f"c{number}"))
    assert list(Message.objects.order_by("created").values_list("text", flat=True)) == [f"m{n}" for n in range(6)]


def test_a_duplicate_key_is_refused_as_with_save(conversation):
    from django.db import IntegrityError, transaction

    message = Message(conversation=conversation, role=Message.Role.USER, text="once")
    insert(message)
    with pytest.raises(IntegrityError), transaction.atomic():
        insert(Message(id=message.id, conversation=conversation, role=Message.Role.USER, text="twice"))
    assert list(Message.objects.values_list("text", flat=True)) == ["once"]


@pytest.mark.parametrize("model", [Message, UsageRecord])
def test_nobody_listens_to_the_saves_of_the_models_inserted_without_signals(model):
    # insert() sends no pre_save or post_save: a receiver added for these models would never run.
    assert not pre_save.has_listeners(model) and not post_save.has_listeners(model)
