"""The signed ticket webhook API: POST a ticket, GET its summary (docs/webhooks.md)."""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from backend.sites.models import Site
from backend.tickets import intake, signing
from backend.tickets.callbacks import result_payload
from backend.tickets.models import Ticket
from backend.tickets.services import enqueue_summary

logger = logging.getLogger(__name__)


def error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message, **extra}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Bearer" if code == "bad_token" else 'Signature realm="webhooks"'
    return response


def not_allowed(allowed: str) -> JsonResponse:
    response = error(405, "method_not_allowed", f"use {allowed}")
    response["Allow"] = allowed
    return response


def ticket_url(ticket: Ticket) -> str:
    return settings.PUBLIC_URL + reverse("ticket-status", args=[ticket.site.key, ticket.pk])


def read_limited(request: HttpRequest) -> bytes | None:
    """Read at most MAX_BODY_BYTES; None when the body is larger (never read past the limit)."""
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > intake.MAX_BODY_BYTES:
        return None
    body = request.read(intake.MAX_BODY_BYTES + 1)
    return None if len(body) > intake.MAX_BODY_BYTES else body


@csrf_exempt
def submit_ticket(request: HttpRequest, site_key: str) -> JsonResponse:
    if request.method != "POST":
        return not_allowed("POST")
    site = Site.objects.filter(key=site_key).first()
    if site is None:
        return error(404, "unknown_site", "no site has this key")
    body = read_limited(request)
    if body is None:
        return error(413, "too_large", f"the body must be at most {intake.MAX_BODY_BYTES} bytes")
    try:
        webhook_id = signing.verify(site.webhook_secret, body, {k.lower(): v for k, v in request.headers.items()})
    except signing.BadSignature as bad:
        return error(401, "bad_signature", f"the request is not signed with the site's webhook secret: {bad}")
    if len(webhook_id) > 200:
        return error(400, "invalid_field", "webhook-id is longer than 200 characters", field="webhook-id")
    try:
        data = intake.parse_body(body)
    except intake.BodyError as problem:
        return JsonResponse(problem.as_json(), status=400)
    ticket, changed = intake.receive(site, webhook_id, data)
    if changed:
        enqueue_summary(ticket.pk)
    logger.info("ticket %s received for site %s (summary queued: %s)", ticket.pk, site.pk, changed)
    return JsonResponse({"id": str(ticket.pk), "status": ticket.state, "url": ticket_url(ticket)}, status=202)


@csrf_exempt
def ticket_status(request: HttpRequest, site_key: str, ticket_id: str) -> JsonResponse:
    if request.method != "GET":
        return not_allowed("GET")
    site = Site.objects.filter(key=site_key).first()
    if site is None:
        return error(404, "unknown_site", "no site has this key")
    if not signing.bearer_matches(request.headers.get("Authorization", ""), site.webhook_secret):
        return error(401, "bad_token", "send Authorization: Bearer <the site's webhook secret>")
    try:
        pk = uuid.UUID(ticket_id)
    except ValueError:
        pk = None
    ticket = Ticket.objects.filter(site=site, pk=pk).first() if pk else None
    if ticket is None:
        return error(404, "unknown_ticket", "this site has no such ticket")
    return JsonResponse(result_payload(ticket))
