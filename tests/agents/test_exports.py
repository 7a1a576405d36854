"""Transcript exports (JSON, CSV) and the privacy deletion of a visitor's data."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from backend.chat.models import Conversation, Message, Visitor
from tests.agents.conftest import conversation_for, login

pytestmark = pytest.mark.django_db

INBOX = "/admin/chat/conversation/"


@pytest.fixture
def jane(acme):
    conversation = conversation_for(
        acme,
        email="jane@acme.example",
        name="Jane",
        texts=[("user", '=HYPERLINK("http://evil.example","click")'), ("assistant", "Sure, héllo"), ("agent", "-2+3")],
    )
    Message.objects.filter(conversation=conversation, role="assistant").update(feedback=1)
    return conversation


def test_the_json_export_holds_the_whole_transcript(jane, ann):
    response = login(ann).get(f"{INBOX}{jane.pk}/export.json")
    assert response["Content-Type"] == "application/json"
    assert f'filename="conversation-{jane.pk}.json"' in response["Content-Disposition"]
    data = json.loads(response.content)
    assert data["id"] == str(jane.pk)
    assert data["site"] == "Acme"
    assert data["visitor"] == {"name": "Jane", "email": "jane@acme.example", "email_verified": False}
    assert [(m["role"], m["text"]) for m in data["messages"]] == [
        ("user", '=HYPERLINK("http://evil.example","click")'),
        ("assistant", "Sure, héllo"),
        ("agent", "-2+3"),
    ]
    reply = data["messages"][1]
    assert (reply["provider"], reply["model"], reply["input_tokens"], reply["output_tokens"]) == (
        "openai",
        "gpt-4o-mini",
        10,
        5,
    )
    assert (reply["cost"], reply["feedback"]) == ("0.000100", 1)
    assert data["messages"][2]["author"] == "Ann Agent"


def test_the_csv_export_has_one_row_per_message_and_disarms_formulas(jane, ann):
    response = login(ann).get(f"{INBOX}{jane.pk}/export.csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["role"] for r in rows] == ["user", "assistant", "agent"]
    assert rows[0]["text"] == '\'=HYPERLINK("http://evil.example","click")'
    assert rows[1]["text"] == "Sure, héllo"
    assert rows[2]["text"] == "'-2+3"
    assert rows[1]["cost"] == "0.000100" and rows[1]["feedback"] == "1" and rows[0]["feedback"] == ""
    assert {r["conversation"] for r in rows} == {str(jane.pk)}
    # No cell a spreadsheet would run as a formula.
    assert not any(value.startswith(("=", "+", "-", "@")) for row in rows for value in row.values())


def test_the_export_actions_cover_several_conversations(jane, acme, root):
    other = conversation_for(acme, texts=[("user", "second")])
    selected = [str(jane.pk), str(other.pk)]
    client = login(root)
    data = json.loads(client.post(INBOX, {"action": "export_json", ACTION_CHECKBOX_NAME: selected}).content)
    assert sorted(c["id"] for c in data["conversations"]) == sorted(selected)
    text = client.post(INBOX, {"action": "export_csv", ACTION_CHECKBOX_NAME: selected}).content.decode()
    assert len(list(csv.DictReader(io.StringIO(text)))) == 4


def test_the_privacy_delete_removes_the_visitor_and_everything_linked_and_nothing_else(jane, acme, ann):
    second = Conversation.objects.create(site=acme, visitor=jane.visitor)
    Message.objects.create(conversation=second, role="user", text="my address is 1 Main St", client_id="z")
    bystander = conversation_for(
        acme, email="bob@acme.example", texts=[("user", "bob's question"), ("assistant", "ok")]
    )
    client = login(ann)
    # The first post asks for confirmation and deletes nothing.
    response = client.post(INBOX, {"action": "delete_visitor_data", ACTION_CHECKBOX_NAME: [str(jane.pk)]})
    assert "Yes, delete their data" in response.text
    assert Visitor.objects.filter(pk=jane.visitor_id).exists()
    response = client.post(
        INBOX, {"action": "delete_visitor_data", ACTION_CHECKBOX_NAME: [str(jane.pk)], "confirm": "yes"}, follow=True
    )
    assert "Deleted 1 visitor(s), 2 conversation(s) and 4 message(s)." in response.text
    assert not Visitor.objects.filter(pk=jane.visitor_id).exists()
    assert not Conversation.objects.filter(pk__in=[jane.pk, second.pk]).exists()
    assert not Message.objects.filter(text__in=["Sure, héllo", "my address is 1 Main St"]).exists()
    assert Visitor.objects.filter(pk=bystander.visitor_id).exists()
    assert list(Message.objects.filter(conversation=bystander).values_list("text", flat=True)) == [
        "bob's question",
        "ok",
    ]


def test_the_privacy_delete_from_the_visitor_list(jane, acme, ann):
    bystander = conversation_for(acme, email="bob@acme.example", texts=[("user", "hi")])
    data = {"action": "delete_visitor_data", ACTION_CHECKBOX_NAME: [str(jane.visitor_id)], "confirm": "yes"}
    login(ann).post("/admin/chat/visitor/", data)
    assert not Visitor.objects.filter(pk=jane.visitor_id).exists()
    assert not Message.objects.filter(conversation_id=jane.pk).exists()
    assert Message.objects.filter(conversation=bystander).count() == 1


def test_an_agent_without_the_delete_permission_gets_no_privacy_action(jane, ann):
    from django.contrib.auth.models import Group

    ann.groups.clear()
    group = Group.objects.create(name="Read only")
    from django.contrib.auth.models import Permission

    group.permissions.add(Permission.objects.get(codename="view_conversation"))
    ann.groups.add(group)
    client = login(ann)
    assert "delete_visitor_data" not in client.get(INBOX).text
    client.post(INBOX, {"action": "delete_visitor_data", ACTION_CHECKBOX_NAME: [str(jane.pk)], "confirm": "yes"})
    assert Visitor.objects.filter(pk=jane.visitor_id).exists()
    # Viewing is not acting: no reply box, and a reply POST is refused.
    page = client.get(f"{INBOX}{jane.pk}/change/")
    assert page.status_code == 200 and 'name="reply"' not in page.text
    assert client.post(f"{INBOX}{jane.pk}/change/", {"reply": "hi"}).status_code == 403
    assert not Message.objects.filter(role="agent", text="hi").exists()
