"""Give every HTTP request an id: taken from X-Request-ID when safe, echoed in the response and the logs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from backend.ops import context

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
