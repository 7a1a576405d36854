"""Who sees what in the admin: agents only their sites' rows, on every page, action and export."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.chat.models import Conversation, Message, Visitor
from tests.agents.conftest import conversation_for, login

pytestmark = pytest.mark.django_db

INBOX = "/admin/chat/conversation/"
VISITORS = "/admin/chat/visitor/"


@pytest.fixture
def world(acme, globex, ann, gus, root, pat):
    """Acme's Jane (waiting, rated a reply) and Globex's Otto, with one message each way."""
    jane = conversation_for(
        acme, email="jane@acme.example", texts=[("user", "acme secret question"), ("assistant", "acme answer")]
    )
    otto = conversation_for(
        globex, name="Otto", texts=[("user", "globex secret question"), ("assistant", "globex answer")]
    )
    return {"jane": jane, "otto": otto}


def change_page(conversation: Conversation) -> str:
    return f"{INBOX}{conversation.pk}/change/"


def test_an_agent_lists_only_their_sites_conversations(world, ann, gus):
    text = login(ann).get(INBOX).text
    assert "acme answer" in text and "jane@acme.example" in text
    assert "globex answer" not in text and "Otto" not in text
    text = login(gus).get(INBOX).text
    assert "globex answer" in text
    assert "acme answer" not in text


def test_the_site_filter_lists_only_the_agents_sites(world, ann):
    text = login(ann).get(INBOX).text
    assert "?site=" in text
    assert "Globex" not in text


def test_a_superuser_sees_every_site(world, root):
    text = login(root).get(INBOX).text
    assert "acme answer" in text and "globex answer" in text


def test_users_who_are_not_staff_are_sent_to_the_login_page(world, pat):
    response = login(pat).get(INBOX)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    response = login(pat).post(change_page(world["jane"]), {"reply": "hi"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not Message.objects.filter(role="agent").exists()


def test_a_foreign_conversation_page_does_not_exist_for_an_agent(world, ann):
    client = login(ann)
    assert client.get(change_page(world["otto"])).status_code == 404
    assert client.get(f"{INBOX}not-a-uuid/change/").status_code == 404


def test_an_agent_cannot_reply_to_or_take_over_a_foreign_conversation(world, ann):
    client = login(ann)
    for data in ({"reply": "sneaky"}, {"action": "take_over"}, {"action": "close"}):
        assert client.post(change_page(world["otto"]), data).status_code == 404
    world["otto"].refresh_from_db()
    assert world["otto"].state == "bot"
    assert not Message.objects.filter(role="agent").exists()


def test_actions_ignore_foreign_conversations(world, ann):
    jane, otto = world["jane"], world["otto"]
    data = {"action": "close_selected", ACTION_CHECKBOX_NAME: [str(jane.pk), str(otto.pk)]}
    login(ann).post(INBOX, data)
    jane.refresh_from_db()
    otto.refresh_from_db()
    assert (jane.state, otto.state) == ("closed", "bot")


def test_exports_of_foreign_conversations_are_404_or_left_out(world, ann):
    client = login(ann)
    otto = world["otto"]
    assert client.get(f"{INBOX}{otto.pk}/export.json").status_code == 404
    assert client.get(f"{INBOX}{otto.pk}/export.csv").status_code == 404
    both = [str(world["jane"].pk), str(otto.pk)]
    response = client.post(INBOX, {"action": "export_json", ACTION_CHECKBOX_NAME: both})
    ids = [c["id"] for c in json.loads(response.content)["conversations"]]
    assert ids == [str(world["jane"].pk)]
    response = client.post(INBOX, {"action": "export_csv", ACTION_CHECKBOX_NAME: both})
    assert "globex" not in response.content.decode()


def test_the_privacy_action_ignores_foreign_visitors(world, ann):
    otto = world["otto"]
    data = {"action": "delete_visitor_data", ACTION_CHECKBOX_NAME: [str(otto.pk)], "confirm": "yes"}
    login(ann).post(INBOX, data)
    assert Visitor.objects.filter(pk=otto.visitor_id).exists()
    data = {"action": "delete_visitor_data", ACTION_CHECKBOX_NAME: [str(otto.visitor_id)], "confirm": "yes"}
    login(ann).post(VISITORS, data)
    assert Visitor.objects.filter(pk=otto.visitor_id).exists()


def test_an_agent_sees_only_their_sites_visitors(world, ann):
    client = login(ann)
    text = client.get(VISITORS).text
    assert "jane@acme.example" in text and "Otto" not in text
    assert client.get(f"{VISITORS}{world['otto'].visitor_id}/change/").status_code in (302, 404)
    assert client.get(f"{VISITORS}{world['jane'].visitor_id}/change/").status_code == 200


def test_an_agent_cannot_open_the_sites_admin(world, ann):
    assert login(ann).get("/admin/sites/site/").status_code == 403


# -- every page renders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("who", ["root", "ann"])
def test_every_agent_page_renders(world, who, request):
    client = login(request.getfixturevalue(who))
    jane = world["jane"]
    pages = [
        "/admin/",
        INBOX,
        f"{INBOX}?state=waiting",
        f"{INBOX}?site={jane.site_id}",
        f"{INBOX}?feedback=good",
        f"{INBOX}?feedback=none",
        f"{INBOX}?q=secret",
        f"{INBOX}?q=jane%40acme",
        f"{INBOX}?last_activity__gte=2020-01-01T00:00:00%2B00:00",
        f"{INBOX}?o=1",
        change_page(jane),
        f"{INBOX}{jane.pk}/export.json",
        f"{INBOX}{jane.pk}/export.csv",
        VISITORS,
        f"{VISITORS}{jane.visitor_id}/change/",
    ]
    if who == "root":
        pages += ["/admin/sites/site/", f"/admin/sites/site/{jane.site_id}/change/", "/admin/sites/site/add/"]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.status_code)


def test_the_privacy_confirmation_page_renders(world, ann):
    response = login(ann).post(INBOX, {"action": "delete_visitor_data", ACTION_CHECKBOX_NAME: [str(world["jane"].pk)]})
    assert response.status_code == 200
    assert "jane@acme.example" in response.text and "cannot be undone" in response.text
    assert Visitor.objects.filter(pk=world["jane"].visitor_id).exists()


def test_search_finds_message_text_and_visitor_email_once_per_conversation(world, ann):
    jane = world["jane"]
    Message.objects.create(conversation=jane, role="user", text="another secret", client_id="x9")
    client = login(ann)
    response = client.get(f"{INBOX}?q=secret")
    assert list(response.context["cl"].result_list) == [jane]
    # Matching two messages neither duplicates the row nor changes its counts.
    assert response.context["cl"].result_list[0].message_count == 3
    assert list(client.get(f"{INBOX}?q=jane%40acme").context["cl"].result_list) == [jane]
    assert list(client.get(f"{INBOX}?q=nothing-like-this").context["cl"].result_list) == []


def test_the_feedback_filter_finds_rated_conversations(world, root):
    Message.objects.filter(conversation=world["jane"], role="assistant").update(feedback=-1)
    client = login(root)
    assert list(client.get(f"{INBOX}?feedback=bad").context["cl"].result_list) == [world["jane"]]
    assert list(client.get(f"{INBOX}?feedback=good").context["cl"].result_list) == []
    assert list(client.get(f"{INBOX}?feedback=none").context["cl"].result_list) == [world["otto"]]


def test_waiting_conversations_come_first_with_their_waiting_time(acme, ann):
    from datetime import timedelta

    from django.utils import timezone

    old = conversation_for(acme, texts=[("user", "old")])
    waiting = conversation_for(acme, texts=[("user", "please, a person")])
    recent = conversation_for(acme, texts=[("user", "recent")])
    Conversation.objects.filter(pk=waiting.pk).update(
        state="waiting",
        waiting_since=timezone.now() - timedelta(minutes=7),
        last_activity=timezone.now() - timedelta(days=1),
    )
    Conversation.objects.filter(pk=old.pk).update(last_activity=timezone.now() - timedelta(hours=1))
    response = login(ann).get(INBOX)
    assert list(response.context["cl"].result_list) == [waiting, recent, old]
    assert "Waiting 7" in response.text


def test_the_inbox_shows_counts_cost_preview_and_visitor(world, ann):
    response = login(ann).get(INBOX)
    row = next(c for c in response.context["cl"].result_list if c.pk == world["jane"].pk)
    assert (row.message_count, row.total_cost) == (2, Decimal("0.0001"))
    assert "$0.000100" in response.text
    assert "acme answer" in response.text  # the last message's preview
    assert "jane@acme.example (unverified)" in response.text


def test_the_inbox_query_count_does_not_grow_with_conversations(acme, ann):
    conversation_for(acme, texts=[("user", "one"), ("assistant", "two")])
    client = login(ann)
    with CaptureQueriesContext(connection) as few:
        client.get(INBOX)
    for index in range(8):
        conversation_for(acme, email=f"v{index}@acme.example", texts=[("user", "q"), ("assistant", "a")])
    with CaptureQueriesContext(connection) as many:
        client.get(INBOX)
    assert len(many) == len(few)


def test_the_conversation_page_shows_the_whole_transcript(world, ann):
    jane = world["jane"]
    Message.objects.filter(conversation=jane, role="assistant").update(feedback=1)
    Message.objects.create(conversation=jane, role="agent", text="<b>Ann here</b>", author="Ann Agent")
    text = login(ann).get(change_page(jane)).text
    for expected in [
        "acme secret question",
        "acme answer",
        "openai gpt-4o-mini",
        "10 in / 5 out",
        "$0.000100",
        "helpful",
        "Ann Agent (agent)",
        "&lt;b&gt;Ann here&lt;/b&gt;",
        'name="reply"',
        "/ws/agent/conversations/",
    ]:
        assert expected in text, expected
    assert "<b>Ann here</b>" not in text


def test_the_inbox_marks_conversations_where_the_visitor_left_an_email(acme, ann):
    from django.utils import timezone

    waiting = conversation_for(acme, email="jane@acme.example", texts=[("user", "nobody came")])
    Conversation.objects.filter(pk=waiting.pk).update(
        state="waiting", waiting_since=timezone.now(), contact_left_at=timezone.now()
    )
    response = login(ann).get(INBOX)
    assert "left an email" in response.text
    assert list(login(ann).get(f"{INBOX}?state=waiting").context["cl"].result_list) == [waiting]


def test_panels_from_other_apps_render_on_the_conversation_page(world, ann):
    from django.utils.html import format_html

    from backend.agents import hooks

    def summary_panel(request, conversation):
        return format_html('<form class="summary"><button>Summarize {}</button></form>', conversation.site.name)

    def careless_panel(request, conversation):
        return "<script>alert(1)</script>"

    registered = list(hooks.CONVERSATION_PANELS)  # the tickets panel stays registered for later tests
    hooks.CONVERSATION_PANELS.extend([summary_panel, careless_panel])
    try:
        text = login(ann).get(change_page(world["jane"])).text
    finally:
        hooks.CONVERSATION_PANELS[:] = registered
    assert '<form class="summary"><button>Summarize Acme</button></form>' in text
    assert "<script>alert(1)</script>" not in text  # plain strings are escaped
