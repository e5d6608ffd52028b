"""Requests the console refuses before any route runs: a body over ``max_body`` bytes (413,
by its Content-Length or while a chunked body streams in) and a NUL character anywhere in the
path or the query string (400: PostgreSQL text cannot hold one, so it could only end in a
database error). Forms are small (a note is at most 2,000 characters, a bulk label 500 ids)."""

from __future__ import annotations

from typing import Any, Final

MAX_BODY: Final = 256 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]


class _TooLarge(Exception):
    pass


class BoundedRequests:
    def __init__(self, app: Any, max_body: int = MAX_BODY) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string") or b"")
        if b"%00" in raw or b"\x00" in raw or "\x00" in scope["path"]:
            await _refuse(send, 400, "NUL characters are refused")
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _refuse(send, 413, f"the body is over {self.max_body} bytes")
            return
        seen, started = 0, False

        async def bounded_receive() -> Message:
            nonlocal seen
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, f"the body is over {self.max_body} bytes")


async def _refuse(send: Any, status: int, why: str) -> None:
    body = (why + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
