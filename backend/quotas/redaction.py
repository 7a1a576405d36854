"""Remove personal data (email addresses, phone numbers, card numbers) and API keys from text bound for logs."""

from __future__ import annotations

import logging
import re

EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")
# 13 to 19 digits, optionally in groups separated by single spaces or dashes.
CARD = re.compile(r"(?<![\w.+/-])\d(?:[ -]?\d){12,18}(?![\w/]|[.-]\d)")
# Digits with the separators people type in phone numbers, optionally led by + or a parenthesised area code.
PHONE = re.compile(r"(?<![\w#/.:+-])(?:\+|00)?\(?\d[\d ().-]{5,22}\d(?![\w/]|[.:-]\d)")
# Secrets shaped like provider keys (sk-…, whsec_…) or bearer tokens.
KEY = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{12,}|\bwhsec_[A-Za-z0-9+/=]{16,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}")
DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if luhn_valid(digits) else match.group()


def _phone(match: re.Match) -> str:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return text
    if DATE.fullmatch(text) or IPV4.fullmatch(text):
        return text
    international = text.startswith(("+", "00"))
    grouped = bool(re.search(r"\d[ ().-]+\d", text)) or text.startswith("(")
    # A bare run of digits is an order or account number unless it is as long as a national number.
    if not international and not grouped and len(digits) < 10:
        return text
    if grouped and not international:
        # Groups of phone numbers have 2 to 4 digits (the first may be 1); anything else is a reference.
        groups = re.findall(r"\d+", text)
        if any(len(g) > 4 for g in groups[1:]) or len(groups) > 6:
            return text
    return "[phone]"


def redact(text: str) -> str:
    """Return the text with email addresses, phone numbers, card numbers and API keys replaced by placeholders."""
    if not text:
        return text
    text = KEY.sub("[key]", text)
    text = EMAIL.sub("[email]", text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)


class RedactFilter(logging.Filter):
    """Redact every log record's message, so no handler writes personal data."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
