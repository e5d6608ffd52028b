"""Real servers for tests, on 127.0.0.1, stopped when the test is done. PostgreSQL is the
development kit's (:mod:`fraud_devtools.postgres`: the demo starts it too)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from fraud_devtools.local import free_port
from fraud_devtools.postgres import logins, postgres_server

__all__ = [
    "case_store_logins",
    "free_port",
    "http_receiver",
    "postgres_server",
    "prometheus_server",
]


class Receiver:
    """A webhook destination whose next responses are scripted (status codes); then 200.
    While ``down`` is set it answers 503 to everything."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.down = False
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.traces: list[str | None] = []  # the traceparent header of each delivered post
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                status = receiver.script.pop(0) if receiver.script else 200
                status = 503 if receiver.down else status
                receiver.posts += 1
                if status == 200:
                    receiver.bodies.append(body)
                    receiver.keys.append(self.headers["Idempotency-Key"])
                    receiver.traces.append(self.headers.get("traceparent"))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 recording what is posted to it; stopped afterwards."""
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@contextmanager
def prometheus_server(
    targets: list[str],
    scrape_interval: str = "1s",
    rule_files: list[Path] | None = None,
    query_log: Path | None = None,
    scrape_configs: list[dict[str, Any]] | None = None,
) -> Iterator[str]:
    """A real Prometheus (Debian package ``prometheus``) scraping ``targets`` (or what
    ``scrape_configs`` say, in its configuration's terms) and evaluating ``rule_files``,
    logging every query it answers to ``query_log`` (JSON lines) if given; yields its URL."""
    import time
    import urllib.request

    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: apt-get install prometheus")
    base = Path(tempfile.mkdtemp(prefix="fraud-prom-"))
    config = base / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": scrape_interval,
                    "evaluation_interval": scrape_interval,
                    **({"query_log_file": str(query_log)} if query_log else {}),
                },
                "scrape_configs": scrape_configs
                or [{"job_name": "scorers", "static_configs": [{"targets": targets}]}],
                "rule_files": [str(f) for f in rule_files or []],
            }
        )
    )
    port = free_port()
    log = (base / "log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus did not start: {(base / 'log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def case_store_logins(owner_dsn: str) -> dict[str, str]:
    """Logins as the docs tell a DBA to create them, on the server of ``owner_dsn`` (a
    superuser in tests: the schema's owner, which runs the migrations): ``sink`` in group role
    fraud_case_writer, ``alice`` and ``bob`` in fraud_analyst. Returns role -> DSN."""
    return logins(
        owner_dsn, {"sink": "fraud_case_writer", "alice": "fraud_analyst", "bob": "fraud_analyst"}
    )
