"""A fault-injecting proxy in front of the real API server, for operator fault tests.

The operator talks plain HTTP to the proxy on 127.0.0.1; the proxy forwards every request to
kube-apiserver over TLS, streaming responses (watches included), except when told to fail:

- ``write_failure_every``: every Nth write (POST/PUT/PATCH/DELETE) is answered with a
  Kubernetes ``Status`` error instead of being forwarded, alternating 500 InternalError and
  409 Conflict;
- ``cut_watches_after_s``: watch streams are cut after so many seconds (a load balancer's idle
  timeout, an API server rolling);
- :meth:`outage`: every open connection is cut and new requests are answered 503 for a while
  (the API server restarting).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections import Counter
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class FaultyApiProxy:
    def __init__(self, upstream: str, ca_file: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=str(ca_file))
        self.write_failure_every = 0
        self.cut_watches_after_s: float | None = None
        self.injected: Counter[str] = Counter()
        self._writes = 0
        self._down_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    # -- control, from the test's thread -----------------------------------------------------

    def start(self) -> FaultyApiProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def outage(self, seconds: float) -> None:
        """Cut every connection and refuse service for ``seconds``."""
        self._down_until = time.monotonic() + seconds
        self.injected["outage"] += 1
        asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result(10)

    def heal(self) -> None:
        self.write_failure_every = 0
        self.cut_watches_after_s = None
        self._down_until = 0.0

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the proxy, in its own event loop ----------------------------------------------------

    def _run(self) -> None:
        # Injected failures are expected: keep aiohttp from printing each one's traceback.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._session = ClientSession(
            connector=TCPConnector(ssl=self.ssl), timeout=ClientTimeout(total=None)
        )
        self._streams: set[web.StreamResponse] = set()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _cut_all(self) -> None:
        for response in list(self._streams):
            if response.task is not None:
                response.task.cancel()
        self._streams.clear()

    def _status(self, code: int, reason: str, message: str) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return web.Response(status=code, text=json.dumps(body), content_type="application/json")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self._down_until:
            self.injected["503"] += 1
            return self._status(503, "ServiceUnavailable", "injected: API server restarting")
        if request.method in WRITES and self.write_failure_every:
            self._writes += 1
            if self._writes % self.write_failure_every == 0:
                if (self._writes // self.write_failure_every) % 2:
                    self.injected["500"] += 1
                    return self._status(500, "InternalError", "injected: etcd timeout")
                self.injected["409"] += 1
                return self._status(409, "Conflict", "injected: the object has been modified")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body or None,  # an empty body would go out as application/octet-stream
            skip_auto_headers=("Content-Type", "Accept-Encoding"),
            auto_decompress=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    response.headers[k] = v
            await response.prepare(request)
            watch = request.query.get("watch") in ("true", "1")
            self._streams.add(response)

            async def pump() -> None:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()

            try:
                if watch and self.cut_watches_after_s:
                    try:
                        await asyncio.wait_for(pump(), self.cut_watches_after_s)
                    except TimeoutError:
                        self.injected["watch-cut"] += 1
                        raise ConnectionResetError("injected: watch cut") from None
                else:
                    await pump()
            finally:
                self._streams.discard(response)
            return response
