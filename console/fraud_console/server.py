"""Runs the console: settings, the connection pool, the labels outbox, uvicorn."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import uvicorn
from fraud_runtime.health import HealthServer
from psycopg_pool import ConnectionPool

from fraud_console.app import create_app
from fraud_console.metrics import ConsoleMetrics
from fraud_console.outbox import Outbox
from fraud_console.settings import load_console_settings
from fraud_console.store import Store, configure

log = logging.getLogger("fraud_console")


def serve(config: Path | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_console_settings(config)
    pool = ConnectionPool(
        settings.dsn.get_secret_value(),
        min_size=1,
        max_size=settings.pool_size,
        kwargs={"autocommit": True},
        configure=configure,
        open=False,
    )
    # The pool opens in the background: the console starts (and says it is not ready) while
    # the database is away, instead of crash-looping on it.
    pool.open(wait=False)
    metrics = ConsoleMetrics()
    store = Store(pool)
    m = settings.metrics
    health = HealthServer(metrics.registry, m.host, m.port, store.ready, time.monotonic).start()
    log.info("metrics and probes on %s:%d", m.host, health.port)
    outbox = None
    if settings.kafka is not None and settings.labels_topic is not None:
        outbox = Outbox(pool, settings.kafka, settings.labels_topic, metrics=metrics).start()
    try:
        app = create_app(settings, store, metrics)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                    proxy_headers=False, server_header=False)  # fmt: skip
    finally:
        if outbox is not None:
            outbox.stop()
        health.stop()
        pool.close()
    return 0
