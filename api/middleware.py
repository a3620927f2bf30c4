"""ASGI middleware: request ids, request body limits, request metrics. Each one job, plain ASGI."""

import re
import time
import uuid
from contextvars import ContextVar

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import graphql_error_response
from api.metrics import Metrics

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
current_request_id: ContextVar[str] = ContextVar("yiyang_request_id", default="-")


def request_id_of(scope: Scope) -> str:
    return scope.get("state", {}).get("request_id", "-")


class RequestIdMiddleware:
    """Takes a well-formed X-Request-ID from the caller or makes one, and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, whether announced by Content-Length or streamed.

    Multipart POSTs to one of `upload_paths` (file uploads: /graphql) may be as large as
    `max_upload_body_bytes` instead; every other request keeps the small limit."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_upload_body_bytes: int = 0,
        upload_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_body_bytes = max(max_bytes, max_upload_body_bytes)
        self.upload_paths = upload_paths

    def _limit(self, scope: Scope, headers: Headers) -> int:
        if (
            scope["method"] == "POST"
            and scope["path"] in self.upload_paths
            and headers.get("content-type", "").lower().startswith("multipart/form-data")
        ):
            return self.max_upload_body_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self._limit(scope, headers)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, headers)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send, headers)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        response = graphql_error_response(
            "The request body is too large.",
            "BAD_USER_INPUT",
            413,
            request_id_of(scope),
            headers.get("accept-language"),
            Connection="close",
        )
        await response(scope, receive, send)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_http(scope["method"], path, status, time.perf_counter() - started)
