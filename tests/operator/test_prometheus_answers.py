"""What the operator takes from the Prometheus a FraudDetector names: bounded in size, never
copied whole into status or logs, credentials in the URL never shown, and only http(s)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fraud_operator.prometheus import MAX_ANSWER_BYTES, Prometheus, PrometheusError
from fraud_operator.spec import Rollout
from pydantic import ValidationError


@contextmanager
def answering(body: bytes) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers every GET with ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_oversized_answer_is_refused_unread() -> None:
    huge = json.dumps({"status": "success", "data": {"result": [], "pad": "x" * MAX_ANSWER_BYTES}})
    with answering(huge.encode()) as url, pytest.raises(PrometheusError, match="larger than"):
        Prometheus(url).query("up")


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "error": "E" * 10_000},
        {"status": "success", "data": {"result": [{"value": "not a pair"}]}},
        {"status": "success"},
    ],
    ids=["long-error", "bad-sample", "no-data-field"],
)
def test_strange_answers_become_short_errors(body: dict[str, Any]) -> None:
    with answering(json.dumps(body).encode()) as url, pytest.raises(PrometheusError) as caught:
        Prometheus(url).scalar("up")
    assert len(str(caught.value)) < 400


def test_credentials_in_the_url_never_reach_an_error() -> None:
    with answering(b"not json") as url:
        secret_url = url.replace("http://", "http://admin:hunter2@")
        with pytest.raises(PrometheusError) as caught:
            Prometheus(secret_url).query("up")
    assert "hunter2" not in str(caught.value) and "127.0.0.1" in str(caught.value)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x", "http://a b", "x" * 3000])
def test_only_http_urls_of_sane_length_are_accepted(url: str) -> None:
    with pytest.raises(ValidationError):
        Rollout.model_validate({"prometheusUrl": url})
