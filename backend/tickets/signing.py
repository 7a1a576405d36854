"""Standard Webhooks signatures, through the standardwebhooks library (constant-time comparison)."""

from __future__ import annotations

import datetime as dt
import hmac

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class BadSignature(Exception):
    """The request is not signed with the site's secret, or not recently."""


def verify(secret: str, body: bytes, headers: dict[str, str]) -> str:
    """Check a request's Standard Webhooks signature (any of several, for rotation); return its webhook-id."""
    present = {name: headers.get(name, "") for name in HEADERS}
    if not all(present.values()):
        raise BadSignature("missing " + ", ".join(name for name, value in present.items() if not value))
    try:
        Webhook(secret).verify(body.decode("utf-8"), present, json_parse=False)
    except WebhookVerificationError as error:
        raise BadSignature(str(error).lower()) from None
    except ValueError:
        # A malformed signature list (no "v1," prefix, bad base64) or a body that is not UTF-8.
        raise BadSignature("malformed webhook-signature") from None
    return present["webhook-id"]


def sign(secret: str, webhook_id: str, when: dt.datetime, body: bytes) -> dict[str, str]:
    """Return the headers that sign body as Standard Webhooks specifies."""
    signature = Webhook(secret).sign(webhook_id, when, body.decode("utf-8"))
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def bearer_matches(authorization: str, secret: str) -> bool:
    """Tell whether an Authorization header carries the secret as a bearer token, in constant time."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(token.strip().encode(), secret.encode())
