"""Records every state-changing request to the submit endpoints and the API (see requestlog.py), and counts
the API calls refused for want of a valid key."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async

from . import requestlog


class RequestLogMiddleware:
    """Sync and async capable, so that under daphne it costs no thread hop on requests it does not log."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        draft = requestlog.start(request)
        if draft is None:
            response = self.get_response(request)
            if requestlog.refused_unauthenticated_api_call(request, response):
                requestlog.count_unauthenticated(request)
            return response
        token = requestlog.CURRENT.set(draft)
        try:
            response = self.get_response(request)
        finally:
            requestlog.CURRENT.reset(token)
        requestlog.finish(request, response, draft)
        return response

    async def __acall__(self, request):
        draft = requestlog.start(request)
        if draft is None:
            response = await self.get_response(request)
            if requestlog.refused_unauthenticated_api_call(request, response):
                await sync_to_async(requestlog.count_unauthenticated)(request)
            return response
        token = requestlog.CURRENT.set(draft)
        try:
            response = await self.get_response(request)
        finally:
            requestlog.CURRENT.reset(token)
        await sync_to_async(requestlog.finish)(request, response, draft)
        return response
