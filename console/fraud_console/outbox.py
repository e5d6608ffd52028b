"""Publishes the labels the console recorded (``label_outbox``, written in the label's own
transaction) to the labels topic, where training and the label-feedback features read them.
A row is deleted only once the broker has acknowledged its message: a broker outage delays
labels, never loses them."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from confluent_kafka import Producer
from fraud_runtime.settings import KafkaSettings
from psycopg_pool import ConnectionPool

from fraud_console.metrics import ConsoleMetrics

log = logging.getLogger("fraud_console.outbox")
_BATCH = 500


class Outbox:
    def __init__(
        self,
        pool: ConnectionPool[Any],
        kafka: KafkaSettings,
        topic: str,
        every_s: float = 1.0,
        metrics: ConsoleMetrics | None = None,
    ) -> None:
        self.pool, self.topic, self.every_s = pool, topic, every_s
        self.metrics = ConsoleMetrics() if metrics is None else metrics
        self.producer = Producer(
            {**kafka.client_config(), "enable.idempotence": True, "message.timeout.ms": 10_000}
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="label-outbox", daemon=True)

    def start(self) -> Outbox:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self.publish()  # what was labelled just before the stop

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.publish()
            except Exception:
                self.metrics.label_publish_failures.inc()
                log.exception("publishing labels failed; retrying")

    def publish(self) -> int:
        """One pass: every waiting label sent, and deleted once acknowledged. Rows are locked
        (SKIP LOCKED) so replicas of the console never send one twice at once."""
        sent = 0
        while True:
            with self.pool.connection() as conn, conn.transaction():
                rows = conn.execute(
                    "SELECT id, transaction_id, body FROM label_outbox ORDER BY id "
                    "LIMIT %s FOR UPDATE SKIP LOCKED",
                    (_BATCH,),
                ).fetchall()
                if not rows:
                    self.metrics.outbox_last_success.set_to_current_time()
                    return sent
                failed: list[str] = []
                done = _collect_errors(failed)
                for _, tx, body in rows:
                    self.producer.produce(
                        self.topic, json.dumps(body).encode(), tx.encode(), on_delivery=done
                    )
                if self.producer.flush(15) or failed:
                    raise RuntimeError(f"labels not acknowledged: {failed[:1] or 'timeout'}")
                conn.execute("DELETE FROM label_outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
                sent += len(rows)
                self.metrics.labels_published.inc(len(rows))


def _collect_errors(into: list[str]) -> Any:
    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            into.append(str(err))

    return done
