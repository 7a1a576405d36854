"""POST a ticket's result to its callback URL: signed, SSRF-checked at send time, retried with backoff."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import random
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings
from django.utils import timezone

from backend.tickets.intake import callback_url_problem
from backend.tickets.models import CallbackAttempt, Ticket
from backend.tickets.signing import sign

logger = logging.getLogger(__name__)

CALLBACK_TIMEOUT = httpx.Timeout(10.0)
CALLBACK_LEASE = dt.timedelta(seconds=60)  # one attempt's hold on the ticket, longer than its timeout
CLOCK_SLACK = dt.timedelta(seconds=5)  # a retry may arrive this early (clocks of different workers)


class CallbackRefused(Exception):
    """The callback URL points somewhere this server must not connect to."""


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Tell whether an address is on the public internet (not private, loopback, link-local, metadata…)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def vetted_address(url: str) -> tuple[str, int]:
    """Resolve the callback host once and return an address it is safe to connect to, with the port."""
    if problem := callback_url_problem(url):
        raise CallbackRefused(f"callback_url {problem}")
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise CallbackRefused(f"cannot resolve {parts.hostname}: {error}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        raise CallbackRefused(f"{parts.hostname} has no address")
    if not settings.WEBHOOK_ALLOW_PRIVATE_CALLBACKS:
        for address in addresses:
            if not is_public(address):
                # Refused when any address is private, so a round-robin name cannot smuggle one in.
                raise CallbackRefused(f"{parts.hostname} resolves to a non-public address ({address})")
    return str(addresses[0]), port


def post_to_vetted(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST to the address vetted just now (no second DNS lookup to rebind), without following redirects."""
    address, port = vetted_address(url)
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    target = urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    with httpx.Client(follow_redirects=False, trust_env=False, timeout=CALLBACK_TIMEOUT) as client:
        return client.post(
            target,
            content=body,
            headers={**headers, "Host": host_header, "Content-Type": "application/json"},
            extensions=extensions,
        )


def retry_delay(attempt: int) -> float:
    """Return seconds to wait after failed attempt number `attempt`: base, doubling, with ±20% jitter."""
    return settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)


def result_payload(ticket: Ticket) -> dict:
    """Return the ticket's result as the callback and the status API both show it."""
    result: dict = {"id": str(ticket.pk), "status": ticket.state, "summary": ticket.summary_dict()}
    if ticket.external_id:
        result["external_id"] = ticket.external_id
    if ticket.state == Ticket.State.FAILED:
        result["error"] = ticket.error
    return result


def claim_due_callback(ticket_id: object) -> Ticket | None:
    """Take the ticket's due callback for one attempt; None when none is due or another worker has it."""
    now = timezone.now()
    claimed = (
        Ticket.objects.filter(pk=ticket_id, callback_due__lte=now + CLOCK_SLACK)
        .exclude(state=Ticket.State.PENDING)
        .exclude(callback_url="")
        .update(callback_due=now + CALLBACK_LEASE)
    )
    return Ticket.objects.select_related("site").get(pk=ticket_id) if claimed else None


def deliver(ticket_id: object) -> float | None:
    """Make the due callback attempt for the ticket's current result; return the wait before another."""
    ticket = claim_due_callback(ticket_id)
    if ticket is None:
        return None
    same_result = Ticket.objects.filter(pk=ticket.pk, version=ticket.version, callback_series=ticket.callback_series)
    earlier = CallbackAttempt.objects.filter(ticket=ticket, version=ticket.version, series=ticket.callback_series)
    number = earlier.count() + 1
    if earlier.filter(delivered=True).exists() or number > settings.WEBHOOK_CALLBACK_ATTEMPTS:
        same_result.update(callback_due=None)
        return None
    now = timezone.now()
    body = json.dumps(
        {"type": f"ticket.{ticket.state}", "timestamp": now.isoformat(), "data": result_payload(ticket)}
    ).encode()
    # One id per result, the same on every retry, so the receiver can drop duplicates.
    headers = sign(ticket.site.webhook_secret, f"msg_{ticket.pk.hex}_{ticket.version}", now, body)
    status, error, final = None, "", False
    try:
        response = post_to_vetted(ticket.callback_url, body, headers)
        status = response.status_code
        if not 200 <= status < 300:
            error = f"answered {status}"
    except CallbackRefused as refused:
        error, final = str(refused), True
    except httpx.HTTPError as failure:
        error = f"network error: {type(failure).__name__}"
    delivered = not error
    wait = None if delivered or final or number >= settings.WEBHOOK_CALLBACK_ATTEMPTS else retry_delay(number)
    CallbackAttempt.objects.create(
        ticket=ticket,
        version=ticket.version,
        series=ticket.callback_series,
        number=number,
        url=ticket.callback_url,
        status_code=status,
        delivered=delivered,
        error=error[:500],
        next_retry_seconds=wait,
    )
    same_result.update(callback_due=None if wait is None else timezone.now() + dt.timedelta(seconds=wait))
    if not delivered:
        logger.info("callback %s for ticket %s failed: %s", number, ticket.pk, error)
    return wait


def overdue_callback_ticket_ids() -> list[str]:
    """Return tickets whose callback is well past due: its queued retry was lost with a worker."""
    late = timezone.now() - CALLBACK_LEASE
    return [str(pk) for pk in Ticket.objects.filter(callback_due__lt=late).values_list("pk", flat=True)[:1000]]


def next_retry_at(attempt: CallbackAttempt) -> dt.datetime | None:
    if attempt.next_retry_seconds is None:
        return None
    return attempt.created + dt.timedelta(seconds=attempt.next_retry_seconds)
