"""Give every HTTP request an id (taken from X-Request-ID when safe, echoed in the response and the logs),
and a clear 503 when a service it needs is away."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin
from redis.exceptions import RedisError

from backend.ops import context

log = logging.getLogger(__name__)

HEADER = "X-Request-ID"


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        request_id = self.start(request)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        request_id = self.start(request)
        response = await self.get_response(request)
        response[HEADER] = request_id
        return response

    def start(self, request: HttpRequest) -> str:
        request_id = context.new_request_id(request.headers.get(HEADER))
        request.request_id = request_id
        context.request_id.set(request_id)
        context.site.set(None)
        context.conversation.set(None)
        return request_id


# Said to an admin user whose save found the database or Redis away: the admin's views run in a
# transaction, so nothing of the save was kept.
UNAVAILABLE_PAGE = "The database or Redis is briefly unavailable, so nothing was saved. Please try again in a moment."


class UnavailableMiddleware(MiddlewareMixin):
    """A request that finds the database or Redis away gets a plain 503 that says so (Retry-After: 5),
    not a server error page. With the Redis ledger, saving a site's settings needs Redis (the configuration
    stamp every process compares, backend/chat/config.py)."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError, RedisError)):
            return None
        log.warning("request refused, service unavailable: %s", type(exception).__name__)
        response = HttpResponse(UNAVAILABLE_PAGE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = "5"
        return response
