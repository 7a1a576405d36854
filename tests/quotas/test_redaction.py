"""redact(): personal data and keys out of text bound for logs; references, dates and figures left alone."""

from __future__ import annotations

import json
import logging

import pytest

from backend.quotas.redaction import RedactFilter, luhn_valid, redact
from tests.conftest import FAKE_KEY, receive_until_end
from tests.fakes.formats import openai_error
from tests.quotas.conftest import chat_from, hello


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write to jane.doe+billing@example.co.uk today", "Write to [email] today"),
        ("MAIL: JOHN_SMITH@Sub.Example.COM.", "MAIL: [email]."),
        ("Call me on +1 (555) 123-4567 after 5pm", "Call me on [phone] after 5pm"),
        ("my number is 555-123-4567", "my number is [phone]"),
        ("(555) 123-4567 or 555.123.4567", "[phone] or [phone]"),
        ("Portable : 06 12 34 56 78", "Portable : [phone]"),
        ("bureau +33 1 42 68 53 00, UK +44 20 7946 0958", "bureau [phone], UK [phone]"),
        ("from abroad 0044 20 7946 0958", "from abroad [phone]"),
        ("text me at 5551234567", "text me at [phone]"),
        ("Card 4111 1111 1111 1111 exp 12/27", "Card [card] exp 12/27"),
        ("card: 5500-0000-0000-0004 thanks", "card: [card] thanks"),
        ("amex 378282246310005", "amex [card]"),
        ("key sk-live-0123456789abcdefWXYZ leaked", "key [key] leaked"),
        ("Authorization: Bearer abcdefghijklmnop0123", "Authorization: [key]"),
    ],
)
def test_it_removes_emails_phone_numbers_cards_and_keys(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Order #123456789 has not arrived",
        "My order number is 12345678",
        "Reference ORD-2024-000123, invoice INV/2025/0042",
        "Delivered on 2024-03-15, or was it 15/03/2024? Maybe 03.15.2024 at 10:30:45",
        "Tracking 1Z999AA10123456784 and SKU A1234-5678",
        "It costs 1,234.56 EUR for 3 items, 12 15 20 cm",
        "Server 192.168.100.200 on port 8443, version 1.2.3",
        "Not a card: 4111 1111 1111 1112",
        "postcode 75008, year 2026, room 404",
        "conversation 0b8c6a3e-5f14-4d8e-9c21-1234567890ab latency_ms=1234567",
    ],
)
def test_it_leaves_order_numbers_dates_and_other_figures_alone(text):
    assert redact(text) == text


def test_a_realistic_support_message_keeps_its_meaning():
    text = (
        "Hi, order #48213 (placed 2026-01-04) never came. You can reach me at marie.curie@example.fr "
        "or +33 6 12 34 56 78. I paid with 4012 8888 8888 1881, please refund."
    )
    assert redact(text) == (
        "Hi, order #48213 (placed 2026-01-04) never came. You can reach me at [email] "
        "or [phone]. I paid with [card], please refund."
    )


def test_the_luhn_check():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


def test_empty_text_stays_empty():
    assert redact("") == ""


def test_the_log_filter_redacts_formatted_messages():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "visitor wrote %s", ("call 555-123-4567",), None)
    assert RedactFilter().filter(record)
    assert record.getMessage() == "visitor wrote call [phone]"


def test_the_console_handler_redacts_every_record(settings):
    handlers = settings.LOGGING["handlers"]
    assert all("redact" in handler.get("filters", []) for handler in handlers.values())


@pytest.mark.django_db(transaction=True)
async def test_a_provider_error_echoing_personal_data_is_logged_redacted(acme, fake_openai, caplog):
    fake_openai.queue(openai_error(400, "Bad input near 'call me at +44 20 7946 0958 or a@b.example'", "invalid"))
    caplog.set_level(logging.INFO)
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "call me at +44 20 7946 0958 or a@b.example"})
        frames = await receive_until_end(ws)
    assert frames[-1]["status"] == "error"
    assert "provider call:" in caplog.text and "status=error" in caplog.text
    assert "[phone]" in caplog.text and "[email]" in caplog.text
    assert "7946" not in caplog.text and "a@b.example" not in caplog.text
    assert FAKE_KEY not in caplog.text and FAKE_KEY not in json.dumps(frames)
