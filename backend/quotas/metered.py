"""Quota-metered structured calls (ticket summaries): reserve before the provider call, settle after it."""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import async_to_sync

from backend.providers.base import Endpoint
from backend.providers.structured import StructuredReply, StructuredRequest, complete_json
from backend.quotas.services import Refusal, highest_price, prompt_upper_bound, reserve, settle


class QuotaRefused(Exception):
    """The site's caps leave no room for this call: no provider call was made."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"the site's {refusal.period} {refusal.metric} cap is reached")
        self.refusal = refusal


def complete_json_metered(
    site_id: int, endpoint: Endpoint, request: StructuredRequest, *, conversation_id: Any = None
) -> StructuredReply:
    """Call complete_json within the site's caps and write the call to the usage ledger.

    The reply's max_tokens may be lowered to what the caps leave; raises QuotaRefused (no call) when even
    QUOTA_MIN_REPLY_TOKENS do not fit.
    """
    prompt = prompt_upper_bound(request.system, request.messages)
    held = reserve(site_id, prompt, request.max_tokens, highest_price([endpoint]))
    if isinstance(held, Refusal):
        raise QuotaRefused(held)
    if held.max_reply_tokens < request.max_tokens:
        request = StructuredRequest(
            request.system, request.messages, request.schema, held.max_reply_tokens, request.schema_name
        )
    started = time.monotonic()
    try:
        reply = async_to_sync(complete_json)(endpoint, request)
    except BaseException:
        # A refused or failed request bills nothing, as with chat replies; the hold is given back.
        settle(
            held,
            kind=endpoint.kind,
            model=endpoint.model,
            input_tokens=0,
            output_tokens=0,
            status="error",
            conversation_id=conversation_id,
        )
        raise
    settle(
        held,
        kind=endpoint.kind,
        model=endpoint.model,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        status="complete",
        latency_ms=int((time.monotonic() - started) * 1000),
        conversation_id=conversation_id,
    )
    return reply
